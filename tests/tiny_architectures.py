"""Tiny local sequence classifiers of eleven architectures, for the architecture matrix tests.

Every model is built from a configuration (no download): hidden size 32, 4 heads, 4 layers,
vocabulary 96, dropout off (so a training-mode forward is deterministic and a loss can be
recomputed by hand). Decoder classifiers get ``pad_token_id=0`` so they find each row's last token.

``BLOCK_WEIGHTS`` is this file's own description of each family's transformer-block weight matrices,
written from the transformers source and independent of the code under test: the tests count zeros
and quantized weights against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import transformers

VOCAB = 96
LAYERS = 4
HEADS = 4
HIDDEN = 32

ARCHITECTURES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "electra",
    "distilbert",
    "albert",
    "deberta-v2",
    "modernbert",
    "gpt2",
    "llama",
    "qwen2",
)

_BERT_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
#: The tiny decoder's dimensions (also ``tiny_causal_lm.tiny_llama``'s, with its own overrides).
DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=2,  # grouped-query attention: 2 query heads per key/value head
    max_position_embeddings=64,
    pad_token_id=0,
    use_cache=False,
)


def _config(arch: str, layers: int) -> Any:
    t = transformers
    if arch in ("bert", "roberta", "xlm-roberta", "electra"):
        cls = {
            "bert": t.BertConfig,
            "roberta": t.RobertaConfig,
            "xlm-roberta": t.XLMRobertaConfig,
            "electra": t.ElectraConfig,
        }[arch]
        extra = {"embedding_size": HIDDEN} if arch == "electra" else {}
        return cls(**{**_BERT_LIKE, "num_hidden_layers": layers, **extra})
    if arch == "distilbert":
        return t.DistilBertConfig(
            vocab_size=VOCAB,
            dim=HIDDEN,
            n_layers=layers,
            n_heads=HEADS,
            hidden_dim=64,
            max_position_embeddings=64,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
        )
    if arch == "albert":
        return t.AlbertConfig(
            **{**_BERT_LIKE, "num_hidden_layers": layers},
            embedding_size=16,
            classifier_dropout_prob=0.0,
        )
    if arch == "deberta-v2":
        # The DeBERTa-v3 layout: relative attention with shared keys, log buckets, no absolute
        # position input.
        return t.DebertaV2Config(
            **{**_BERT_LIKE, "num_hidden_layers": layers},
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            pooler_dropout=0.0,
        )
    if arch == "modernbert":
        # A window of 8 tokens makes the local layers differ from the global ones on 12 tokens.
        return t.ModernBertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=HEADS,
            global_attn_every_n_layers=3,
            local_attention=8,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
        )
    if arch == "gpt2":
        return t.GPT2Config(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=layers,
            n_head=HEADS,
            n_positions=64,
            pad_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
    if arch == "llama":
        return t.LlamaConfig(**{**DECODER, "num_hidden_layers": layers})
    if arch == "qwen2":
        return t.Qwen2Config(**{**DECODER, "num_hidden_layers": layers})
    raise ValueError(f"unknown architecture {arch!r}")


_CLASSES = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlm-roberta": "XLMRobertaForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "albert": "AlbertForSequenceClassification",
    "deberta-v2": "DebertaV2ForSequenceClassification",
    "modernbert": "ModernBertForSequenceClassification",
    "gpt2": "GPT2ForSequenceClassification",
    "llama": "LlamaForSequenceClassification",
    "qwen2": "Qwen2ForSequenceClassification",
}


def tiny_classifier(
    arch: str,
    *,
    layers: int = LAYERS,
    seed: int = 0,
    num_labels: int = 2,
    vocab_size: int = VOCAB,
    pad_token_id: int = 0,
) -> Any:
    """A freshly initialised tiny ``...ForSequenceClassification`` of ``arch`` in eval mode."""
    config = _config(arch, layers)
    config.num_labels = num_labels
    config.vocab_size = vocab_size
    if arch in ("modernbert", "gpt2", "llama", "qwen2"):
        config.pad_token_id = pad_token_id
    torch.manual_seed(seed)
    model = getattr(transformers, _CLASSES[arch])(config)
    return model.eval()


def tiny_batch(arch: str, *, rows: int = 4, length: int = 12, seed: int = 0) -> dict[str, Any]:
    """Random token ids (3..VOCAB-1), a right-padded attention mask and labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1, length - 3 :] = 0
    ids[1, length - 3 :] = 0 if arch not in ("roberta", "xlm-roberta") else 1
    labels = torch.randint(0, 2, (rows,), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# name of a block weight matrix (a 2-D weight inside a transformer layer), per family
BLOCK_WEIGHTS: dict[str, str] = {
    "bert": r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight",
    "roberta": r"roberta\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight",
    "xlm-roberta": r"roberta\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight",
    "electra": r"electra\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight",
    "distilbert": r"distilbert\.transformer\.layer\.\d+\.(attention\.(q_lin|k_lin|v_lin|out_lin)|ffn\.(lin1|lin2))\.weight",
    "albert": r"albert\.encoder\.albert_layer_groups\.\d+\.albert_layers\.\d+\.(attention\.(query|key|value|dense)|ffn|ffn_output)\.weight",
    "deberta-v2": r"deberta\.encoder\.layer\.\d+\.(attention\.self\.(query_proj|key_proj|value_proj)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight",
    "modernbert": r"model\.layers\.\d+\.(attn\.(Wqkv|Wo)|mlp\.(Wi|Wo))\.weight",
    "gpt2": r"transformer\.h\.\d+\.(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))\.weight",
    "llama": r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))\.weight",
    "qwen2": r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))\.weight",
}


def block_weight_names(arch: str, model: torch.nn.Module) -> list[str]:
    """The model's parameter names that :data:`BLOCK_WEIGHTS` describes (the test's own list)."""
    pattern = re.compile(BLOCK_WEIGHTS[arch])
    return [name for name, _ in model.named_parameters() if pattern.fullmatch(name)]


def logits(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits


def last_hidden(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The last layer's hidden states: larger than a random head's logits, so a change shows."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states[-1]


ModelFactory = Callable[[], Any]
