"""Tiny random-weight encoders of every supported family, built from configs (nothing is downloaded)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
import transformers

WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "with",
    "from",
    "by",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "this",
    "that",
    "these",
    "those",
    "he",
    "she",
    "they",
    "we",
    "you",
    "i",
    "my",
    "your",
    "his",
    "her",
    "their",
    "our",
    "model",
    "data",
    "text",
    "token",
    "tensor",
    "graph",
    "engine",
    "quantize",
    "calibrate",
    "export",
    "run",
    "fast",
    "slow",
    "small",
    "large",
    "good",
    "bad",
    "new",
    "old",
    "first",
    "last",
    "day",
    "time",
    "year",
    "people",
    "world",
    "city",
    "river",
    "music",
    "food",
    "water",
    "light",
    "house",
    "school",
    "market",
    "price",
    "game",
    "team",
    "player",
    "song",
    "film",
    "book",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

FAMILY_CONFIGS = {
    "bert": lambda: transformers.BertConfig(),
    "roberta": lambda: transformers.RobertaConfig(
        type_vocab_size=1, pad_token_id=0, bos_token_id=2, eos_token_id=3
    ),
    "deberta-v2": lambda: transformers.DebertaV2Config(
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=-1,
        position_biased_input=False,
        type_vocab_size=0,
        pooler_hidden_size=32,
    ),
    "electra": lambda: transformers.ElectraConfig(embedding_size=24),
    "distilbert": lambda: transformers.DistilBertConfig(),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(
        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2
    ),
    "mpnet": lambda: transformers.MPNetConfig(pad_token_id=0, bos_token_id=2, eos_token_id=3),
    # two layers: global then local attention; a window of 8 tokens (4 each side) is shorter than most
    # test sentences, so the sliding-window mask matters
    "modernbert": lambda: transformers.ModernBertConfig(
        num_hidden_layers=2,
        layer_types=["full_attention", "sliding_attention"],
        local_attention=8,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
    ),
    # three uses of the one shared layer
    "albert": lambda: transformers.AlbertConfig(embedding_size=16, pad_token_id=0),
}
LAYERS = {"albert": 3}
FAMILIES = tuple(FAMILY_CONFIGS)
TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "sentence-embedding": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
TASKS = tuple(TASK_CLASSES)


def vocabulary() -> list[str]:
    """WordPiece vocabulary: special tokens, letters, continuation letters, digits, punctuation, words.

    Every entry is unique (the one-letter words "a" and "i" are already letters)."""
    letters = list(string.ascii_lowercase)
    words = [word for word in WORDS if word not in letters]
    return SPECIAL + letters + [f"##{c}" for c in letters] + list(string.digits) + list(".,!?'-") + words


def tiny_config(family: str, task: str, hidden: int = 32) -> transformers.PretrainedConfig:
    """A small config (hidden 32 unless ``hidden``, 2 layers, 4 heads) of ``family`` with a head for ``task``."""
    config = FAMILY_CONFIGS[family]()
    sizes = {
        "hidden_size": hidden,
        "num_hidden_layers": LAYERS.get(family, 2),
        "num_attention_heads": 4,
        "intermediate_size": 2 * hidden,
    }
    if family == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}
    for key, value in sizes.items():
        setattr(config, key, value)
    config.vocab_size = len(vocabulary())
    config.max_position_embeddings = 64
    config.num_labels = {"token-classification": 5, "question-answering": 2}.get(task, 3)
    return config


def unigram_tokenizer(vocab_size: int = 120) -> transformers.PreTrainedTokenizerBase:
    """An XLM-RoBERTa (SentencePiece Unigram) tokenizer trained here on the pseudo-sentences, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-RoBERTa's ids 0-4
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>")
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(sentences(400, seed=7), trainer)
    pieces = json.loads(unigram.to_str())["model"]["vocab"]
    return transformers.XLMRobertaTokenizer(
        vocab=[(piece, score) for piece, score in pieces], model_max_length=64
    )


def make_tiny_model(directory: Path, family: str, task: str, seed: int = 0, hidden: int = 32) -> Path:
    """Save a random-weight ``family`` model with a ``task`` head and its tokenizer to ``directory``:
    SentencePiece Unigram for XLM-RoBERTa, WordPiece for the others."""
    directory.mkdir(parents=True, exist_ok=True)
    if family == "xlm-roberta":
        tokenizer = unigram_tokenizer()
    else:
        (directory / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
        # transformers 5 takes the vocabulary as ``vocab``; it ignores ``vocab_file`` (every word would be [UNK]).
        tokenizer = transformers.BertTokenizerFast(vocab=str(directory / "vocab.txt"), model_max_length=64)
    torch.manual_seed(seed)
    config = tiny_config(family, task, hidden)
    config.vocab_size = len(tokenizer)
    model = getattr(transformers, TASK_CLASSES[task]).from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences of vocabulary words (3 to 30 words)."""
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(count):
        length = int(torch.randint(3, 31, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        lines.append(" ".join(WORDS[i] for i in picks) + ".")
    return lines
