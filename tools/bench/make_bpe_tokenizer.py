"""Trains a GPT-2-style byte-level BPE tokenizer.json on a text file with Hugging Face `tokenizers`
(for prep_data_bench --hf-tokenizer and for checking moefold's encoder against the reference):

  build/pyref/bin/python tools/bench/make_bpe_tokenizer.py core/data/corpus/kjv.txt /tmp/bpe.json
  build/pyref/bin/python tools/bench/make_bpe_tokenizer.py --check PREFIX TEXT.jsonl /tmp/bpe.json

--check encodes every line's "text" with the reference library and compares the ids (plus the
end-of-document id) with the documents of the indexed dataset PREFIX written by
`moefold prep-data --tokenizer hf`.
"""
import json
import struct
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def train(text_path, out_path, vocab_size=8000):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([text_path], trainer)
    tok.save(out_path)


def check(prefix, jsonl_path, tokenizer_path):
    tok = Tokenizer.from_file(tokenizer_path)
    eod = tok.token_to_id("<|endoftext|>")
    idx = open(prefix + ".idx", "rb").read()
    dtype = idx[17]
    n = struct.unpack_from("<Q", idx, 18)[0]
    lengths = struct.unpack_from("<%di" % n, idx, 34)
    width = {8: 2, 4: 4}[dtype]
    fmt = {8: "H", 4: "i"}[dtype]
    data = open(prefix + ".bin", "rb").read()
    at, seq, bad = 0, 0, 0
    for line in open(jsonl_path, encoding="utf-8"):
        ids = tok.encode(json.loads(line)["text"]).ids
        if ids:
            ids.append(eod)
            got = list(struct.unpack_from("<%d%s" % (lengths[seq], fmt), data, at))
            at += lengths[seq] * width
            seq += 1
            if got != ids:
                bad += 1
                if bad <= 3:
                    print("differs:", line.strip()[:80], got[:12], ids[:12])
    print(json.dumps({"documents": seq, "differing": bad}))
    return bad == 0 and seq == n


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2], sys.argv[3], sys.argv[4]) else 1)
    train(sys.argv[1], sys.argv[2])
