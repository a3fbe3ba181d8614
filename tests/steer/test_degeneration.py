"""The degeneration (loop) test: hand-written loops are flagged, ordinary sentences in many scripts are not."""

import pytest

from langneurons.steer.degeneration import THRESHOLD, is_degenerate, normalise, repeated_ngram_share

LOOPS = {
    "a repeated English word": "plus plus plus plus",
    "a repeated Hindi phrase": "खाने के खाने के खाने के",
    "a loop inside one Devanagari word": "केभभभभभभभभभभ",
    "a repeated Han character": "的的的的的的",
    "a repeated Latin phrase": "I love you. I love you. I love you. I love you.",
    "a French sentence that starts looping": "Le maire a annoncé hier que plus plus plus plus plus plus",
    "a Hindi sentence that starts looping": "सरकार ने कहा कि किसानों को को को को को को को को",
    "a Bengali loop": "আমি আমি আমি আমি আমি আমি",
    "an Arabic loop": "في في في في في في في",
    "punctuation": "................",
}

SENTENCES = {
    "en": "The committee will meet again next week to discuss the budget and the new school buildings.",
    "fr": "Le conseil municipal a voté hier soir un nouveau plan pour rénover les écoles du quartier.",
    "es": "El museo abrirá sus puertas el próximo lunes con una exposición sobre la historia del puerto.",
    "hi": "भारत की राजधानी नई दिल्ली में कल एक बड़ी बैठक हुई जिसमें कई राज्यों के मंत्री शामिल हुए।",
    "hi, two sentences": "सरकार ने कहा कि किसानों को नई योजना के तहत बीज और खाद सस्ते दामों पर मिलेंगे। इसके साथ ही "
                         "गाँवों में सिंचाई के लिए नए कुएँ बनाए जाएँगे और बिजली की आपूर्ति भी बेहतर की जाएगी।",
    "zh": "昨天下午，市政府宣布将在明年春天开放一座新的公共图书馆。",
    "bn": "আজ সকালে শহরের প্রধান সড়কে একটি নতুন সেতুর উদ্বোধন করা হয়েছে।",
    "ar": "أعلنت وزارة التعليم اليوم عن خطة جديدة لتطوير المدارس في المناطق الريفية.",
    "ur": "حکومت نے اعلان کیا کہ اگلے مہینے سے بجلی کی قیمتوں میں کمی کی جائے گی۔",
    "ta": "நேற்று மாலை நகரத்தில் பெரிய மழை பெய்ததால் பல சாலைகள் மூடப்பட்டன.",
    "ru": "В субботу в городском парке пройдёт большой концерт местных музыкантов.",
    "ja": "今日は朝から雨が降っていたので、私たちは家で本を読んで過ごしました。",
    "th": "วันนี้อากาศดีมาก เราจึงไปเดินเล่นที่สวนสาธารณะใกล้บ้าน",
    "a short answer": "Yes, it is.",
    "a list of numbers": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "a long English paragraph (450 characters)": (
        "When the old bridge over the river was finally closed for repairs, the people who lived on the eastern "
        "bank had to drive almost twenty minutes around the lake to reach the market, the hospital and the train "
        "station. Local shop owners said that their sales fell sharply during the first month, while the council "
        "promised that the new bridge would be stronger, wider and safer for cyclists and for the many children "
        "who walk to school every morning."),
}


@pytest.mark.parametrize("name", LOOPS)
def test_loops_are_degenerate(name):
    assert is_degenerate(LOOPS[name]), (name, repeated_ngram_share(LOOPS[name]))


@pytest.mark.parametrize("name", SENTENCES)
def test_ordinary_sentences_are_not_degenerate(name):
    share = repeated_ngram_share(SENTENCES[name])
    assert share < THRESHOLD / 2, (name, share)  # with a margin: ordinary prose stays far below the threshold
    assert not is_degenerate(SENTENCES[name])


def test_shares_by_hand():
    # "plus plus plus plus": 19 characters, 16 4-grams, 5 distinct ("plus", "lus ", "us p", "s pl", " plu")
    assert repeated_ngram_share("plus plus plus plus") == pytest.approx(11 / 16)
    # 6 x 的: three 4-grams, all the same
    assert repeated_ngram_share("的的的的的的") == pytest.approx(2 / 3)
    # क, े, then 11 x भ: 13 characters, 10 4-grams, distinct "केभभ", "ेभभभ", "भभभभ"
    assert repeated_ngram_share("केभभभभभभभभभभभ") == pytest.approx(7 / 10)
    # no 4-gram repeated
    assert repeated_ngram_share("abcdefgh") == 0.0
    # fewer than two 4-grams: never degenerate
    assert repeated_ngram_share("的的的的") == 0.0 and not is_degenerate("aaaa") and not is_degenerate("")
    # case and whitespace do not hide a loop
    assert normalise("  Plus\n\nPLUS\tplus  plus ") == "plus plus plus plus"
    assert repeated_ngram_share("Plus\nPLUS  plus plus") == pytest.approx(11 / 16)
    # the threshold is inclusive, and the n-gram length is a parameter
    # "abcabc": 3-grams abc, bca, cab, abc: share 1/4
    assert is_degenerate("abcabc", threshold=0.25, n=3) and not is_degenerate("abcabc", threshold=0.26, n=3)
