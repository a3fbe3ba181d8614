"""Prompts, labels, truncation and padding-invariant scoring for XNLI and XQuAD."""

import pytest
import torch
from tiny import tiny_model

from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import (
    IGNORE_INDEX,
    NLI_LABEL_WORDS,
    collate,
    encode_examples,
    encode_nli,
    encode_qa,
    fit_qa_prompt,
    last_token_index,
    nli_label_logits,
    nli_label_token_ids,
    nli_prompt,
    qa_loss_sum,
    qa_prompt,
)
from langneurons.tasks import NLIExample, QAExample

LONG_CONTEXT = "the cat sat on the mat. " * 30  # ~180 tokens with the tiny tokenizer


def qa(context=LONG_CONTEXT, answer="the cat", start=0, question="who sat on the mat"):
    return QAExample("q", 0, "", context, question, (answer,), (start,))


def test_prompts_end_in_answer_cue_and_label_words_follow_tasks_labels():
    example = NLIExample("n", "the cat sat", "a cat", 0)
    assert nli_prompt(example) == (
        "Premise: the cat sat\nHypothesis: a cat\n"
        "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction.\nAnswer:")
    assert qa_prompt(qa("the mat")) == "Context: the mat\nQuestion: who sat on the mat\nAnswer:"
    assert NLI_LABEL_WORDS == ("entailment", "neutral", "contradiction")


def test_qa_loss_only_on_answer_tokens_and_eos(tokenizer):
    example = qa("the cat sat on the mat", answer="on the mat", start=12)
    encoded = encode_qa(tokenizer, example, 128)
    prompt_ids = tokenizer(qa_prompt(example))["input_ids"]
    answer_ids = tokenizer(" on the mat", add_special_tokens=False)["input_ids"]
    assert list(encoded.input_ids) == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert list(encoded.labels) == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]
    assert encoded.target_count == len(answer_ids) + 1 and not encoded.truncated


def test_truncation_cuts_the_context_never_question_or_answer(tokenizer):
    example = qa(answer="the cat", start=0)
    assert len(encode_qa(tokenizer, example, 1000).input_ids) > 100
    encoded = encode_qa(tokenizer, example, 64)
    assert encoded.truncated and len(encoded.input_ids) <= 64
    text = tokenizer.decode(list(encoded.input_ids))
    assert text.endswith("\nQuestion: who sat on the mat\nAnswer: the cat<eos>")
    kept_context = text.removeprefix("Context: ").split("\nQuestion:")[0]
    assert LONG_CONTEXT.startswith(kept_context) and 0 < len(kept_context) < len(LONG_CONTEXT)
    # as much context as fits: one more context token would exceed the budget
    prompt, cut = fit_qa_prompt(tokenizer, example, 64, reserve=3)
    assert cut and len(tokenizer(prompt)["input_ids"]) <= 61
    kept = len(prompt) - len(qa_prompt(example, context=""))
    ends = [end for _, end in tokenizer(LONG_CONTEXT, return_offsets_mapping=True)["offset_mapping"]]
    one_more = LONG_CONTEXT[: min(end for end in ends if end > kept)]
    assert len(tokenizer(qa_prompt(example, context=one_more))["input_ids"]) > 61


def test_examples_whose_answer_would_be_cut_are_skipped_and_counted(tokenizer):
    late = LONG_CONTEXT + "the dog"
    examples = [qa(answer="the cat", start=0), qa(late, answer="the dog", start=len(LONG_CONTEXT)),
                qa(question="who " * 200)]  # question alone too long
    with pytest.warns(UserWarning, match="2 of 3 xquad examples skipped"):
        data = encode_examples(tokenizer, "xquad", examples, 64)
    assert (len(data.examples), data.skipped, data.truncated) == (1, 2, 1)
    with pytest.raises(LangNeuronsError, match="no xquad example fits"), pytest.warns(UserWarning):
        encode_examples(tokenizer, "xquad", examples[1:], 64)


def test_bad_training_examples_are_errors(tokenizer):
    with pytest.raises(LangNeuronsError, match="no valid label"):
        encode_examples(tokenizer, "xnli", [NLIExample("n", "a", "b", None)], 64)
    with pytest.raises(LangNeuronsError, match="needs NLIExample"):
        encode_examples(tokenizer, "xnli", [qa()], 64)
    with pytest.raises(LangNeuronsError, match="unknown task"):
        encode_examples(tokenizer, "squad", [qa()], 64)
    with pytest.raises(LangNeuronsError, match="no answer"):
        encode_examples(tokenizer, "xquad", [QAExample("q", 0, "", "c", "q", (), ())], 64)


def test_label_words_must_have_distinct_first_tokens(tokenizer):
    ids = nli_label_token_ids(tokenizer)
    assert ids.tolist() == [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in NLI_LABEL_WORDS]
    with pytest.raises(LangNeuronsError, match="not distinct"):
        nli_label_token_ids(tokenizer, ("cat", "cats", "catalog"))


def test_last_token_index_for_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3, 3]


@pytest.mark.parametrize("family", ["llama", "gpt2", "bloom", "opt"])
def test_label_scores_are_the_lm_logits_at_the_last_real_token_whatever_the_padding(tokenizer, family):
    model = tiny_model(family)
    examples = [NLIExample("a", "the cat sat on the mat and the cat sat", "le chat", 0),
                NLIExample("b", "el gato", "the cat", 1)]
    encoded = [encode_nli(tokenizer, e, 128) for e in examples]
    assert len(encoded[0].input_ids) > len(encoded[1].input_ids)
    label_ids = nli_label_token_ids(tokenizer)
    with torch.no_grad():
        alone = torch.stack([model(torch.tensor([e.input_ids])).logits[0, -1, label_ids] for e in encoded])
        for side in ("left", "right"):
            batch = collate(encoded, pad=0, padding_side=side)
            scores = nli_label_logits(model, batch["input_ids"], batch["attention_mask"], label_ids)
            torch.testing.assert_close(scores, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_qa_loss_sum_is_the_cross_entropy_of_the_answer_tokens(tokenizer, side):
    model = tiny_model("llama")
    examples = [qa("the cat sat on the mat", answer="on the mat", start=12), qa("le chat", answer="le chat", start=0)]
    encoded = [encode_qa(tokenizer, e, 128) for e in examples]
    expected = 0.0
    with torch.no_grad():
        for e in encoded:  # unpadded, full logits: position t-1 predicts token t
            logits = model(torch.tensor([e.input_ids])).logits[0]
            for t, label in enumerate(e.labels):
                if label != IGNORE_INDEX:
                    expected += -torch.log_softmax(logits[t - 1], -1)[label].item()
        loss = qa_loss_sum(model, collate(encoded, pad=0, padding_side=side))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
