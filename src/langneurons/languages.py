"""Known language codes (ISO 639-1) with names and FLORES-200 / flores_plus codes.

Every command validates language codes against this table, so a typo fails at once with a
clear message instead of silently producing an empty corpus.
"""

from __future__ import annotations

from langneurons.errors import LangNeuronsError, brief

# code: (English name, FLORES code)
LANGUAGES: dict[str, tuple[str, str]] = {
    "af": ("Afrikaans", "afr_Latn"), "am": ("Amharic", "amh_Ethi"), "ar": ("Arabic", "arb_Arab"),
    "as": ("Assamese", "asm_Beng"), "az": ("Azerbaijani", "azj_Latn"), "be": ("Belarusian", "bel_Cyrl"),
    "bg": ("Bulgarian", "bul_Cyrl"), "bn": ("Bengali", "ben_Beng"), "ca": ("Catalan", "cat_Latn"),
    "cs": ("Czech", "ces_Latn"), "cy": ("Welsh", "cym_Latn"), "da": ("Danish", "dan_Latn"),
    "de": ("German", "deu_Latn"), "el": ("Greek", "ell_Grek"), "en": ("English", "eng_Latn"),
    "es": ("Spanish", "spa_Latn"), "et": ("Estonian", "est_Latn"), "eu": ("Basque", "eus_Latn"),
    "fa": ("Persian", "pes_Arab"), "fi": ("Finnish", "fin_Latn"), "fr": ("French", "fra_Latn"),
    "ga": ("Irish", "gle_Latn"), "gl": ("Galician", "glg_Latn"), "gu": ("Gujarati", "guj_Gujr"),
    "ha": ("Hausa", "hau_Latn"), "he": ("Hebrew", "heb_Hebr"), "hi": ("Hindi", "hin_Deva"),
    "hr": ("Croatian", "hrv_Latn"), "hu": ("Hungarian", "hun_Latn"), "hy": ("Armenian", "hye_Armn"),
    "id": ("Indonesian", "ind_Latn"), "ig": ("Igbo", "ibo_Latn"), "is": ("Icelandic", "isl_Latn"),
    "it": ("Italian", "ita_Latn"), "ja": ("Japanese", "jpn_Jpan"), "jv": ("Javanese", "jav_Latn"),
    "ka": ("Georgian", "kat_Geor"), "kk": ("Kazakh", "kaz_Cyrl"), "km": ("Khmer", "khm_Khmr"),
    "kn": ("Kannada", "kan_Knda"), "ko": ("Korean", "kor_Hang"), "ky": ("Kyrgyz", "kir_Cyrl"),
    "lo": ("Lao", "lao_Laoo"), "lt": ("Lithuanian", "lit_Latn"), "lv": ("Latvian", "lvs_Latn"),
    "mk": ("Macedonian", "mkd_Cyrl"), "ml": ("Malayalam", "mal_Mlym"), "mn": ("Mongolian", "khk_Cyrl"),
    "mr": ("Marathi", "mar_Deva"), "ms": ("Malay", "zsm_Latn"), "my": ("Burmese", "mya_Mymr"),
    "ne": ("Nepali", "npi_Deva"), "nl": ("Dutch", "nld_Latn"), "no": ("Norwegian", "nob_Latn"),
    "or": ("Odia", "ory_Orya"), "pa": ("Punjabi", "pan_Guru"), "pl": ("Polish", "pol_Latn"),
    "ps": ("Pashto", "pbt_Arab"), "pt": ("Portuguese", "por_Latn"), "ro": ("Romanian", "ron_Latn"),
    "ru": ("Russian", "rus_Cyrl"), "si": ("Sinhala", "sin_Sinh"), "sk": ("Slovak", "slk_Latn"),
    "sl": ("Slovenian", "slv_Latn"), "so": ("Somali", "som_Latn"), "sq": ("Albanian", "als_Latn"),
    "sr": ("Serbian", "srp_Cyrl"), "sv": ("Swedish", "swe_Latn"), "sw": ("Swahili", "swh_Latn"),
    "ta": ("Tamil", "tam_Taml"), "te": ("Telugu", "tel_Telu"), "tg": ("Tajik", "tgk_Cyrl"),
    "th": ("Thai", "tha_Thai"), "tl": ("Tagalog", "tgl_Latn"), "tr": ("Turkish", "tur_Latn"),
    "uk": ("Ukrainian", "ukr_Cyrl"), "ur": ("Urdu", "urd_Arab"), "uz": ("Uzbek", "uzn_Latn"),
    "vi": ("Vietnamese", "vie_Latn"), "yo": ("Yoruba", "yor_Latn"), "zh": ("Chinese", "zho_Hans"),
    "zu": ("Zulu", "zul_Latn"),
}


def check_language(code: str) -> str:
    """Return ``code`` if known, else raise a one-line error."""
    if code not in LANGUAGES:
        raise LangNeuronsError(f"unknown language code {brief(code)}; use ISO 639-1 codes such as en, fr, hi, zh")
    return code


def check_languages(codes) -> list[str]:
    codes = [c.strip() for c in codes if c.strip()]
    if not codes:
        raise LangNeuronsError("no languages given")
    if len(set(codes)) != len(codes):
        raise LangNeuronsError(f"duplicate languages in {brief(list(codes))}")
    return [check_language(c) for c in codes]


def flores_code(code: str) -> str:
    return LANGUAGES[check_language(code)][1]


def language_name(code: str) -> str:
    return LANGUAGES[code][0] if code in LANGUAGES else code
