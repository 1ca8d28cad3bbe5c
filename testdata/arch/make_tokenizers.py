#!/usr/bin/env python3
"""Writes the tiny tokenizers under testdata/arch/ (weightkit-io `arch` tests).

Run with a Python that has `tokenizers`, `sentencepiece` and `transformers`
(for example `target/interop-venv`, `pip install tokenizers sentencepiece
transformers protobuf`):

    python testdata/arch/make_tokenizers.py

Each directory mimics the files a real Hugging Face repository ships:

- `tok-llama3/`  Llama-3 style byte-level BPE (`ignore_merges`, no byte
  fallback, the Llama-3 Split regex, `<|begin_of_text|>` prepended by a
  TemplateProcessing post-processor), special tokens after the base vocab,
  fewer tokens than the tiny-llama's `vocab_size` (256) so the converter pads.
- `tok-llama3-jinja/` the same vocabulary with `chat_template.jinja`,
  `additional_chat_templates/`, a dict-valued `pad_token`, and a
  post-processor appending `<|end_of_text|>` while `eos_token` is `<|eot|>`.
- `tok-qwen2/`   Qwen2 style byte-level BPE (the Qwen2 regex, NFC normalizer,
  no BOS in the tokenizer: `bos_token` null).
- `tok-llama2/`  Llama-2 / TinyLlama / Mistral style `tokenizer.json`: BPE with
  byte fallback converted by transformers from a SentencePiece BPE model, with
  the Llama-2 normalizer / post-processor and a transformers-4 style
  `tokenizer_config.json`; two added tokens past the base vocab. The
  SentencePiece BPE `tokenizer.model` it was converted from is kept beside it.
- `tok-unigram/` a SentencePiece Unigram model (`tokenizer.model`) and its
  `tokenizer.json` transcription (tokenizers' `Unigram` model with the
  pieces and scores of the `.model`, byte fallback).

The SentencePiece models are trained on a fixed small corpus; training is
deterministic for a fixed corpus and sentencepiece version (0.2.x).
"""

import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import AddedToken, Regex

HERE = os.path.dirname(os.path.abspath(__file__))

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Weights and biases, tensors and metadata.",
    "llama qwen mistral gguf safetensors 12345 67890",
    "I've been told he's there; 'RE you sure? We'Ve a'lL",
    "ünïcödé text ✓ 日本語 \t tabs\n\nand newlines",
] * 40

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|eot|>' }}{% endfor %}"
)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def reset(name):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def byte_level_bpe(regex, base_vocab, ignore_merges=True):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # A limited alphabet (the corpus' bytes), so the base vocabulary stays small.
    trainer = trainers.BpeTrainer(vocab_size=base_vocab, min_frequency=2, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def make_llama3():
    d = reset("tok-llama3")
    tok = byte_level_bpe(LLAMA3_REGEX, 200)
    base = tok.get_vocab_size()
    # Llama-3 puts its special tokens after the base vocabulary.
    tok.add_tokens([
        AddedToken("<|begin_of_text|>", special=True, normalized=False),
        AddedToken("<|end_of_text|>", special=True, normalized=False),
        AddedToken("<|start|>", special=True, normalized=False),
        AddedToken("<|eot|>", special=True, normalized=False),
        # not marked special, but looks special: convert makes it CONTROL
        AddedToken("<|reserved_0|>", special=False, normalized=False),
        # a plain user-defined token
        AddedToken("weightkit", special=False, normalized=False),
    ])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", base)],
        ),
    ])
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "bos_token": "<|begin_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })


def make_llama3_jinja():
    """tok-llama3 with its chat templates in chat_template.jinja and
    additional_chat_templates/, and a post-processor that appends a token
    other than eos_token (the converter then records the configured eos as
    eot and the appended one as eos)."""
    d = reset("tok-llama3-jinja")
    src = os.path.join(HERE, "tok-llama3")
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    tp = j["post_processor"]["processors"][1]
    tp["single"].append({"SpecialToken": {"id": "<|end_of_text|>", "type_id": 0}})
    tp["special_tokens"]["<|end_of_text|>"] = {"id": "<|end_of_text|>", "ids": [201], "tokens": ["<|end_of_text|>"]}
    write_json(os.path.join(d, "tokenizer.json"), j)
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    del tc["chat_template"]
    tc["add_eos_token"] = False  # disagrees with the post-processor, which wins
    tc["pad_token"] = {"content": "<|reserved_0|>", "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": True, "__type": "AddedToken"}
    write_json(os.path.join(d, "tokenizer_config.json"), tc)
    with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(CHAT_TEMPLATE + "\n")
    os.makedirs(os.path.join(d, "additional_chat_templates"))
    for name, body in [("tool-use", "{{ tools }}"), ("rag", "{{ documents }}")]:
        with open(os.path.join(d, "additional_chat_templates", name + ".jinja"), "w", encoding="utf-8") as f:
            f.write(body)


def make_qwen2():
    d = reset("tok-qwen2")
    tok = byte_level_bpe(QWEN2_REGEX, 180, ignore_merges=False)
    tok.normalizer = normalizers.NFC()
    tok.add_tokens([
        AddedToken("<|endoftext|>", special=True, normalized=False),
        AddedToken("<|im_start|>", special=True, normalized=False),
        AddedToken("<|im_end|>", special=True, normalized=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_prefix_space": False,
        "bos_token": None,
        "chat_template": [
            {"name": "default", "template": CHAT_TEMPLATE},
            {"name": "tool_use", "template": "{{ messages }}"},
        ],
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })


def train_spm(tmp, model_type):
    with open(os.path.join(tmp, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(CORPUS))
    # Relative paths: the .model records its trainer arguments, so the file
    # is byte-for-byte reproducible only if they do not name the temp dir.
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        spm.SentencePieceTrainer.train(
            input="corpus.txt", model_prefix=model_type, vocab_size=320, model_type=model_type,
            byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, minloglevel=2, normalization_rule_name="identity",
        )
    finally:
        os.chdir(cwd)
    return os.path.join(tmp, model_type + ".model")


def make_llama2(tmp):
    from transformers import LlamaTokenizer

    d = reset("tok-llama2")
    src = os.path.join(tmp, "llama2-src")
    os.makedirs(src)
    shutil.copy(train_spm(tmp, "bpe"), os.path.join(src, "tokenizer.model"))
    # Kept: the converter reads it when present (the SentencePiece path); the
    # tokenizer.json-only path is exercised by leaving it out.
    shutil.copy(os.path.join(src, "tokenizer.model"), os.path.join(d, "tokenizer.model"))
    # transformers converts the SentencePiece BPE model into a byte-fallback BPE tokenizer.json
    LlamaTokenizer.from_pretrained(src).save_pretrained(os.path.join(tmp, "llama2-out"))
    with open(os.path.join(tmp, "llama2-out", "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    assert j["model"]["type"] == "BPE" and j["model"]["byte_fallback"] is True
    # The rest as the Llama-2 / TinyLlama tokenizer.json files have it (tokenizers 0.1x era).
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ]}
    j["pre_tokenizer"] = None
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    n = len(j["model"]["vocab"])
    j["added_tokens"] += [
        {"id": n, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True},
        {"id": n + 1, "content": "<custom>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},
    ]
    write_json(os.path.join(d, "tokenizer.json"), j)
    decoder = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
               for t in j["added_tokens"]}
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>"],
        "bos_token": "<s>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": "</s>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    })


def make_unigram(tmp):
    d = reset("tok-unigram")
    model = train_spm(tmp, "unigram")
    shutil.copy(model, os.path.join(d, "tokenizer.model"))
    sp = spm.SentencePieceProcessor()
    sp.LoadFromFile(model)
    vocab = [(sp.IdToPiece(i), sp.GetScore(i)) for i in range(sp.GetPieceSize())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=True))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(" ", "\u2581"),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    # The SentencePiece control pieces as special added tokens (as transformers' converters do).
    tok.add_special_tokens([AddedToken(sp.IdToPiece(i), special=True, normalized=False)
                            for i in (sp.unk_id(), sp.bos_id(), sp.eos_id())])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", sp.bos_id()), ("</s>", sp.eos_id())],
    )
    tok.save(os.path.join(d, "tokenizer.json"))
    # transformers-5 style: no added_tokens_decoder
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_prefix_space": True,
        "backend": "tokenizers",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
    })


def main():
    with tempfile.TemporaryDirectory() as tmp:
        make_llama3()
        make_llama3_jinja()
        make_qwen2()
        make_llama2(tmp)
        make_unigram(tmp)
    print("wrote tok-llama3, tok-qwen2, tok-llama2, tok-unigram", file=sys.stderr)


if __name__ == "__main__":
    main()
