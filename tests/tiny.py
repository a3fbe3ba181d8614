"""Tiny random models of every supported family and a tiny tokenizer, built in-process.

Shared by the whole test suite (``from tiny import tiny_model, tiny_tokenizer``).
"""

from __future__ import annotations

import functools

import torch
import transformers as tf

VOCAB = 384
HIDDEN = 32
NEURONS = 48
LAYERS = 2

_ATTENTION = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _text_configs() -> dict:
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    common = dict(**ids, vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=NEURONS, num_hidden_layers=LAYERS, **_ATTENTION)
    return {
        "llama": (tf.LlamaConfig(**common), tf.LlamaForCausalLM),
        "mistral": (tf.MistralConfig(**common), tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config(**common), tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config(**common, head_dim=8), tf.Qwen3ForCausalLM),
        "gemma": (tf.GemmaConfig(**common, head_dim=8), tf.GemmaForCausalLM),
        "gemma2": (tf.Gemma2Config(**common, head_dim=8), tf.Gemma2ForCausalLM),
        "gemma3_text": (tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=16), tf.Gemma3ForCausalLM),
        "cohere": (tf.CohereConfig(**common), tf.CohereForCausalLM),
        "cohere2": (tf.Cohere2Config(**common, sliding_window=16), tf.Cohere2ForCausalLM),
        "olmo2": (tf.Olmo2Config(**common), tf.Olmo2ForCausalLM),
        "phi3": (tf.Phi3Config(**dict(common, num_key_value_heads=4)), tf.Phi3ForCausalLM),
        "gpt2": (tf.GPT2Config(**ids, vocab_size=VOCAB, n_embd=HIDDEN, n_inner=NEURONS, n_layer=LAYERS, n_head=4, n_positions=128),
                 tf.GPT2LMHeadModel),
        "bloom": (tf.BloomConfig(**ids, vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=4), tf.BloomForCausalLM),
        "opt": (tf.OPTConfig(**ids, vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=NEURONS, num_hidden_layers=LAYERS,
                             num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=HIDDEN),
                tf.OPTForCausalLM),
        "xglm": (tf.XGLMConfig(**ids, vocab_size=VOCAB, d_model=HIDDEN, ffn_dim=NEURONS, num_layers=LAYERS, attention_heads=4,
                               max_position_embeddings=128, dropout=0.0, attention_dropout=0.0), tf.XGLMForCausalLM),
    }


FAMILIES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "cohere", "cohere2", "olmo2", "phi3",
    "gpt2", "bloom", "opt", "xglm",
)


def tiny_model(family: str = "llama", seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model of ``family`` in eval mode (float32, CPU)."""
    torch.manual_seed(seed)
    if family == "gemma3":
        text = tf.Gemma3TextConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=NEURONS,
                                   num_hidden_layers=LAYERS, head_dim=8, sliding_window=16, **_ATTENTION)
        vision = tf.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=28, patch_size=14)
        config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
        model = tf.Gemma3ForConditionalGeneration(config)
    else:
        config, cls = _text_configs()[family]
        model = cls(config)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _tokenizer_object():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<bos>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    sample = ["the cat sat on the mat", "le chat est sur le tapis", "el gato está en la alfombra", "猫在垫子上", "बिल्ली चटाई पर है"]
    tokenizer.train_from_iterator(sample * 20, trainer=trainer)
    return tokenizer


def tiny_tokenizer(padding_side: str = "right") -> tf.PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer with <pad>=0, <bos>=1, <eos>=2 and at most VOCAB tokens."""
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer_object(), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tok.padding_side = padding_side
    return tok
