"""Load exported model folders as a user would (AutoTokenizer, AutoModelForMaskedLM) and print their ids
and logits as JSON. tests/test_colab.py runs it with the course's transformers and with the oldest supported.

    python load_export.py '{"name": "path/to/folder", ...}'
"""

import json
import sys

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

TEXTS = [
    "The jury said it did find that the court had been mishandled.",
    "  leading spaces, UPPER case, numbers 1962 and a rare word: floccinaucinihilipilification",
    "Ünïcödé and emoji 🙂 and tabs\tand <mask> in the middle",
]

found = {}
for name, folder in json.loads(sys.argv[1]).items():
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    pair = tokenizer(TEXTS[0], TEXTS[1])["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    found[name] = {
        "class": type(tokenizer).__name__,
        "ids": batch["input_ids"].tolist() + [pair],
        # the first 64 columns of the vocabulary and each position's best token: enough to see a difference
        "logits": logits[..., :64].tolist(),
        "argmax": logits.argmax(-1).tolist(),
    }
print(json.dumps(found))
