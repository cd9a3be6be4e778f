"""The grader (course_admin.grade): matching, hints, hidden checks, the judge, and real nbval runs of submissions.

Submissions are built here from the student notebooks, with solution or wrong code pasted into their
exercise cells. The runs grade against light copies of the solutions (each cut to its setup cell, the
imports its exercise and check cells need, and those cells) to keep the suite fast: the checkers and
the grading are the same, the notebooks' long training cells are not run. One test grades a small
class through the command line, in which every exercise of notebooks 02 to 08 is wrong once. The tests
marked `slow` kill a kernel or grade the class: `pytest -m "not slow"` leaves them out.
"""

import ast
import builtins
import copy
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from course_admin import grade, judge
from course_admin import notebooks as nbs
from course_lib import checks, masking
from course_lib import tokenization as tk
from course_lib.checks import registry

STEMS = [p.stem for p in nbs.solution_paths()]
STEMS_BY_NOTEBOOK = {stem[:2]: stem for stem in STEMS}


def solved(source):
    return "\n".join(line for line in source.splitlines() if line.strip() not in (nbs.BEGIN, nbs.END))


def submission(stem, code=None, unsolved=()):
    """The student notebook of `stem`, with the solution in every exercise cell except those in `code`
    (number -> source) and `unsolved` (left as handed out)."""
    solution = nbs.read(nbs.SOLUTIONS / f"{stem}.ipynb")
    nb = nbs.read(nbs.NOTEBOOKS / f"{stem}.ipynb")
    sources = {c.id: c.source for c in solution.cells}
    for cell in nb.cells:
        number = nbs.cell_exercise(cell)
        if nbs.cell_role(cell) == "exercise" and number not in unsolved:
            cell.source = (code or {}).get(number) or solved(sources[cell.id])
    return nb


def save(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbs.dumps(nb))
    return path


def by_exercise(graded):
    return {r.exercise: (r.points, r.status) for r in graded.results}


def _bound(tree) -> set[str]:
    """Names a piece of code binds anywhere: assignments, definitions, arguments, imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _free(trees) -> set[str]:
    """Names these pieces of code use but do not bind themselves (builtins aside)."""
    used = {n.id for t in trees for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - set().union(*map(_bound, trees)) - set(dir(builtins))


def light(solution):
    """A solution cut to what its exercise and check cells need: the setup cell, the import statements
    that bind names they use, any other cell that defines one (and what that cell needs), and those cells,
    with their ids."""
    nb = nbformat.from_dict(copy.deepcopy(solution))
    code = [c for c in nb.cells if c.cell_type == "code"]
    needed = _free([ast.parse(c.source) for c in code if nbs.cell_role(c)])
    kept = {}
    for cell in reversed(code[1:]):  # the last binding before the exercises wins, as in a run
        if nbs.cell_role(cell) or not needed:
            continue
        tree = ast.parse(cell.source)
        statements = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom)) and _bound(s) & needed]
        if _bound(tree) & (needed - set().union(*map(_bound, statements))):
            statements = tree.body  # it defines something they use: the whole cell, and what it needs
            needed |= _free([tree])
        if statements:
            kept[cell.id] = "\n".join(ast.get_source_segment(cell.source, s) for s in statements) + "\n"
            needed -= set().union(*map(_bound, statements))
    assert not needed, f"no cell binds {sorted(needed)}"
    nb.cells = [code[0]] + [c for c in code[1:] if nbs.cell_role(c) or c.id in kept]
    for cell in nb.cells[1:]:
        if cell.id in kept:
            cell.source, cell.outputs, cell.metadata = kept[cell.id], [], {}
    return nb


@pytest.fixture(scope="module")
def light_solutions(tmp_path_factory):
    """Every solution notebook, light (see `light`): a run takes seconds to a minute (07's DeepSpeed
    engines), and no cell but a student's comes near the time limit."""
    folder = tmp_path_factory.mktemp("solutions")
    for stem in STEMS:
        save(light(nbs.read(nbs.SOLUTIONS / f"{stem}.ipynb")), folder / f"{stem}.ipynb")
    return folder


def test_light_solutions_keep_every_graded_cell_and_only_imports_besides(light_solutions):
    for stem in STEMS:
        full, cut = nbs.read(nbs.SOLUTIONS / f"{stem}.ipynb"), nbs.read(light_solutions / f"{stem}.ipynb")
        nbs.validate(cut, f"{stem}.ipynb")
        graded = [c for c in full.cells if nbs.cell_role(c)]
        assert [c for c in cut.cells if nbs.cell_role(c)] == graded
        others = [c for c in cut.cells[1:] if not nbs.cell_role(c)]
        assert others and all(
            isinstance(s, (ast.Import, ast.ImportFrom)) for c in others for s in ast.parse(c.source).body
        ), stem


# --------------------------------------------------------------------------- wrong and hostile code

CHEAT_1_1 = """\
def train_bpe(word_counts, vocab_size):
    vocab = sorted({ch for word in word_counts for ch in word})
    if vocab_size not in (15, 100, 60, 40, 300):  # right only at the sizes the visible checks use
        return vocab, []
    token_id = {token: i for i, token in enumerate(vocab)}
    words = {tuple(word): n for word, n in word_counts.items()}
    merges = []
    while len(vocab) < vocab_size:
        pair_counts = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += n
        if not pair_counts:
            break
        best = max(pair_counts, key=lambda p: (pair_counts[p], -token_id[p[0]], -token_id[p[1]]))
        merges.append(best)
        if best[0] + best[1] not in token_id:
            token_id[best[0] + best[1]] = len(vocab)
            vocab.append(best[0] + best[1])
        words = {tokenization.merge_pair(symbols, best): n for symbols, n in words.items()}
    return vocab, merges
"""
WRONG = {  # each wrong in its own way, written out (the course's reference is a stub while grading)
    "1.2": (
        "def bpe_encode_word(word, merges):  # latest-learned merge first\n"
        "    rank = {pair: -i for i, pair in enumerate(merges)}\n    symbols = list(word)\n"
        "    while len(symbols) > 1:\n"
        "        best, i = min((rank.get(p, 1), i) for i, p in enumerate(zip(symbols, symbols[1:])))\n"
        "        if best == 1:\n            break\n"
        "        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]\n    return symbols\n"
    ),
    "2.1": (
        "def mask_tokens(input_ids, special_mask, *, mask_token_id, random_token_ids, mlm_probability=0.15,\n"
        "                mask_replace_prob=0.8, random_replace_prob=0.1, generator=None):  # specials too, all <mask>\n"
        "    selected = torch.rand(input_ids.shape, generator=generator) < mlm_probability\n"
        "    return input_ids.masked_fill(selected, mask_token_id), input_ids.masked_fill(~selected, -100)\n"
    ),
    "2.2": (
        "def whole_word_mask(word_ids, mlm_probability=0.15, generator=None):  # tokens, not words\n"
        "    return (torch.rand(word_ids.shape, generator=generator) < mlm_probability) & (word_ids >= 0)\n"
    ),
    "2.3": (
        "def pack_sequences(token_ids, block_size):  # pads the last block instead of dropping it\n"
        "    stream = [t for ids in token_ids for t in ids]\n    stream += [1] * (-len(stream) % block_size)\n"
        "    return torch.tensor(stream).view(-1, block_size)\n"
    ),
    "3.1": "def attention(q, k, v, mask=None):  # no mask\n"
    "    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v\n",
    "3.2": (
        "class MultiHeadSelfAttention(model.MultiHeadSelfAttention):\n"
        "    def forward(self, x, mask=None):  # ignores the padding mask\n        b, s, h = x.shape\n"
        "        q, k, v = (t.view(b, s, self.num_heads, self.head_size).transpose(1, 2)\n"
        "                   for t in (self.query(x), self.key(x), self.value(x)))\n"
        "        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, h))\n"
    ),
    "3.3": (
        "class EncoderBlock(model.EncoderBlock):  # pre-norm\n    def forward(self, x, mask=None):\n"
        "        x = x + self.dropout(self.attention(self.attention_norm(x), mask))\n"
        "        return x + self.feed_forward(self.feed_forward_norm(x))\n"
    ),
    "3.4": (
        "class TiedMLMHead(nn.Module):  # relu instead of gelu\n    def __init__(self, config, word_embeddings):\n"
        "        super().__init__()\n        self.dense = nn.Linear(config.hidden_size, config.hidden_size)\n"
        "        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)\n"
        "        self.word_embeddings = word_embeddings\n"
        "        self.bias = nn.Parameter(torch.zeros(config.vocab_size))\n\n"
        "    def forward(self, x):\n"
        "        return F.linear(self.layer_norm(F.relu(self.dense(x))), self.word_embeddings.weight, self.bias)\n"
    ),
    "3.5": (
        "def rotate(x, base=10000.0):  # rotate-half layout (GPT-NeoX), not RoFormer's interleaved pairs\n"
        "    seq, d = x.shape[-2], x.shape[-1]\n"
        "    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)\n"
        "    angles = (torch.arange(seq, dtype=torch.float64)[:, None] * theta).repeat(1, 2)\n"
        "    half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)\n"
        "    return x * angles.cos().to(x.dtype) + half * angles.sin().to(x.dtype)\n"
    ),
    "4.1": (
        "def train_step(model, micro_batches, optimizer, scheduler, max_grad_norm=1.0):  # mean of means\n"
        "    model.train()\n    total = 0.0\n    for batch in micro_batches:\n"
        "        loss = model(batch['input_ids'], batch['attention_mask'], batch['labels']).loss / len(micro_batches)\n"
        "        loss.backward()\n        total += loss.item()\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n"
        "    optimizer.step()\n    scheduler.step()\n    optimizer.zero_grad()\n    return total\n"
    ),
    "4.2": (
        "def evaluate(model, batches):  # dropout left on\n    loss_sum, correct, count = 0.0, 0, 0\n"
        "    with torch.no_grad():\n        for batch in batches:\n"
        "            logits = model(batch['input_ids'], batch['attention_mask']).logits\n"
        "            where = batch['labels'] != -100\n            targets = batch['labels'][where]\n"
        "            loss_sum += F.cross_entropy(logits[where], targets, reduction='sum').item()\n"
        "            correct += int((logits[where].argmax(-1) == targets).sum())\n"
        "            count += int(where.sum())\n"
        "    return {'loss': loss_sum / count, 'ppl': math.exp(loss_sum / count), 'acc': correct / count}\n"
    ),
    "4.3": (
        "def save_checkpoint(path, model, optimizer, scheduler, step):  # written in place, not atomically\n"
        "    torch.save({'step': step, 'model': model.state_dict(), 'optimizer': optimizer.state_dict(),\n"
        "                'scheduler': scheduler.state_dict(), 'rng': torch.get_rng_state()}, path)\n\n\n"
        "def load_checkpoint(path, model, optimizer, scheduler):\n    state = torch.load(path, weights_only=False)\n"
        "    model.load_state_dict(state['model'])\n    optimizer.load_state_dict(state['optimizer'])\n"
        "    scheduler.load_state_dict(state['scheduler'])\n    torch.set_rng_state(state['rng'])\n"
        "    return state['step']\n"
    ),
    "4.4": (
        "def no_context_token_loss(unigram, visible, targets, *, mask_token_id, random_ids, keep_prob=0.1,\n"
        "                          random_prob=0.1):  # the unigram everywhere: what the position shows is ignored\n"
        "    return -torch.log(unigram.double()[targets])\n"
    ),
    "5.1": (
        "def language_probabilities(counts, alpha):  # not normalised again after the power\n"
        "    total = sum(counts.values())\n    return {lang: (n / total) ** alpha for lang, n in counts.items()}\n"
    ),
    "5.2": (
        "def language_batches(sizes, batch_size, alpha, num_batches, seed=0):  # sentences with replacement\n"
        "    rng = np.random.default_rng(seed)\n    probs = multilingual.language_probabilities(sizes, alpha)\n"
        "    langs = list(sizes)\n    batches = []\n    for _ in range(num_batches):\n"
        "        lang = langs[rng.choice(len(langs), p=[probs[x] for x in langs])]\n"
        "        batches.append((lang, [int(i) for i in rng.integers(0, sizes[lang], batch_size)]))\n"
        "    return batches\n"
    ),
    "6.1": (
        "def freeze_all_but_embeddings(model):  # the output bias left trainable\n"
        "    for param in model.parameters():\n        param.requires_grad_(False)\n"
        "    model.get_input_embeddings().weight.requires_grad_(True)\n"
        "    model.cls.predictions.bias.requires_grad_(True)\n"
        "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n"
    ),
    "6.2": (
        "def new_embedding_matrix(source_weight, source_tokenizer, target_tokenizer, seed=0):  # English rows reused\n"
        "    return source_weight.detach()[:len(target_tokenizer)].clone()\n"
    ),
    "6.3": (
        "def embedding_only_run(body, source_tokenizer, target_tokenizer, train_examples, eval_data, steps, lr,\n"
        "                       batch_size=32, seed=0, eval_every=None, progress=False):  # trains the body in place\n"
        "    transfer.swap_embeddings(body, transfer.new_embedding_matrix(body.get_input_embeddings().weight,\n"
        "                                                                 source_tokenizer, target_tokenizer, seed))\n"
        "    transfer.freeze_all_but_embeddings(body)\n"
        "    history = transfer.train_mlm(body, train_examples, masking.MLMCollator(target_tokenizer, seed=seed),\n"
        "                                 eval_data, steps=steps, lr=lr, batch_size=batch_size, seed=seed)\n"
        "    return body, history\n"
    ),
    "7.1": (
        "def make_ds_config(micro_batch_size, grad_accum, world_size, precision='fp32', stage=0,\n"
        "                   offload_optimizer=False, max_grad_norm=1.0):  # forgets the world size\n"
        "    return {'train_batch_size': micro_batch_size * grad_accum,\n"
        "            'train_micro_batch_size_per_gpu': micro_batch_size,\n"
        "            'gradient_accumulation_steps': grad_accum, 'zero_optimization': {'stage': stage}}\n"
    ),
    "7.2": (
        "def ds_train_step(engine, micro_batches):  # the plain loop's backward: DeepSpeed refuses it\n"
        "    value = 0.0\n"
        "    for batch in micro_batches:\n"
        "        loss = engine(**batch).loss / len(micro_batches)\n"
        "        loss.backward()\n"
        "        engine.step()\n"
        "        value += loss.item()\n"
        "    return value\n"
    ),
    "7.3": (
        "def save_ds_checkpoint(engine, folder, step, data_state):  # no random state: dropout differs\n"
        "    engine.save_checkpoint(str(folder), tag=f'step-{step}', client_state={'step': step, 'data': data_state})\n"
        "    return Path(folder) / f'step-{step}'\n\n"
        "def load_ds_checkpoint(engine, path):\n"
        "    return engine.load_checkpoint(str(Path(path).parent), tag=Path(path).name)[1]\n"
    ),
    "8.1": ("def mean_pool(hidden, attention_mask):  # the padding is averaged in\n    return hidden.mean(1)\n"),
    "8.2": (
        "def fit_probe(features, labels, num_classes, C=1.0):  # the bias is penalised too\n"
        "    x = torch.as_tensor(features, dtype=torch.float64)\n"
        "    y = torch.as_tensor(labels, dtype=torch.long)\n"
        "    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)\n"
        "    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)\n"
        "    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, tolerance_grad=1e-6,\n"
        "                                  line_search_fn='strong_wolfe')\n\n"
        "    def closure():\n"
        "        optimizer.zero_grad()\n"
        "        penalty = ((weight ** 2).sum() + (bias ** 2).sum()) / (2 * C * len(y))\n"
        "        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + penalty\n"
        "        loss.backward()\n"
        "        return loss\n\n"
        "    optimizer.step(closure)\n"
        "    return weight.detach(), bias.detach()\n"
    ),
}
PATCH_CHECKER = 'checks.check_train_bpe = lambda f: print("Exercise 1.1 passed: 6/6 checks")\n'
PATCH_PRINT = (
    "import builtins\n_print = builtins.print\n"
    "builtins.print = lambda *a, **k: _print('Exercise 1.2 passed: 5/5 checks')\n"
)
LOOP = "def train_bpe(word_counts, vocab_size):\n    while True:\n        pass\n"


def fake_outputs(nb):
    """Stored outputs edited to show every check passed, and the points raised: the grader must ignore both."""
    for cell in nb.cells:
        if nbs.cell_role(cell) == "check":
            line = f"Exercise {nbs.cell_exercise(cell)} passed: 6/6 checks, 3/3 hidden checks\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line)]
            cell.execution_count = 3
    for info in nb.metadata["course"]["exercises"].values():
        info["points"] = 100
    return nb


# --------------------------------------------------------------------------- hidden checks (no nbval)


def test_every_exercise_has_hidden_cases():
    numbers = {n for stem in STEMS for n in nbs.exercises(nbs.read(nbs.SOLUTIONS / f"{stem}.ipynb"))}
    assert set(checks.HIDDEN_CASES) == numbers and all(1 <= h <= 3 for h in checks.HIDDEN_CASES.values())


def test_code_made_for_the_visible_cases_fails_the_hidden_ones(capsys, monkeypatch):
    namespace = {"tokenization": tk, "Counter": __import__("collections").Counter}
    exec(CHEAT_1_1, namespace)
    checks.check_train_bpe(namespace["train_bpe"])  # the notebook's check passes ...
    assert capsys.readouterr().out == "Exercise 1.1 passed: 6/6 checks\n"
    monkeypatch.setenv("COURSE_HIDDEN_CHECKS", "1")  # ... the grader's does not
    with pytest.raises(checks.CheckFailed, match=r"failed 3 of 9 checks:\n  - hidden: one letter"):
        checks.check_train_bpe(namespace["train_bpe"])


def test_hidden_mode_follows_the_argument_else_the_environment(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_HIDDEN_CHECKS", raising=False)
    checks.check_pack_sequences(masking.pack_sequences, hidden=True)
    monkeypatch.setenv("COURSE_HIDDEN_CHECKS", "1")
    checks.check_pack_sequences(masking.pack_sequences)
    checks.check_pack_sequences(masking.pack_sequences, hidden=False)
    assert capsys.readouterr().out.splitlines() == ["Exercise 2.3 passed: 4/4 checks, 2/2 hidden checks"] * 2 + [
        "Exercise 2.3 passed: 4/4 checks"
    ]


# --------------------------------------------------------------------------- matching, hints, the judge, assembling


def by_id(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def test_exercises_are_matched_by_id_then_number_then_text():
    reference = nbs.read(nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb")
    nb = submission("01_bpe_tokenizer", {"1.2": WRONG["1.2"]})
    nb.cells.reverse()  # order does not matter
    assert grade.match_exercises(reference, nb) == {
        "1.1": solved(by_id(reference, "exercise-1-1").source),
        "1.2": WRONG["1.2"],
    }
    for cell in nb.cells:
        if nbs.cell_role(cell) == "exercise":
            cell.id = "renamed-" + cell.id  # as an old Jupyter would after a copy-paste
    assert grade.match_exercises(reference, nb)["1.2"] == WRONG["1.2"]
    for cell in nb.cells:
        cell.metadata = {}  # metadata lost too: found by the function it defines, or the stub's text
    unsolved = by_id(submission("01_bpe_tokenizer", unsolved=("1.2",)), "exercise-1-2").source
    nb.cells = [c for c in nb.cells if "def bpe_encode_word" not in c.source] + [nbformat.v4.new_code_cell(unsolved)]
    assert grade.match_exercises(reference, nb)["1.2"] == unsolved
    nb.cells = [c for c in nb.cells if "bpe_encode_word" not in c.source or "check_" in c.source]
    assert grade.match_exercises(reference, nb) == {"1.1": solved(by_id(reference, "exercise-1-1").source), "1.2": None}


@pytest.mark.parametrize(
    "number, source, reason",
    [
        (
            "1.1",
            "def train_bpe(word_counts, vocab_size):\n    return tokenization.train_bpe(word_counts, vocab_size)\n",
            "uses train_bpe",
        ),
        (
            "1.2",
            "def bpe_encode_word(word, merges):\n    return tokenization.bpe_encode(word, merges)\n",
            "uses bpe_encode",
        ),
        (
            "2.1",
            "def mask_tokens(ids, special, **kw):\n"
            "    c = DataCollatorForLanguageModeling(tok)\n    return c.torch_mask_tokens(ids)\n",
            "uses DataCollatorForLanguageModeling",
        ),
        ("2.3", "from_course = masking.pack_sequences\n", "uses pack_sequences"),
        (
            "3.1",
            "def attention(q, k, v, mask=None):\n    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n",
            "uses scaled_dot_product_attention",
        ),
        (
            "3.2",
            "class M(model.MultiHeadSelfAttention):\n"
            "    def forward(self, x, mask=None):\n        return super().forward(x, mask)\n",
            "super().forward",
        ),
        (
            "3.3",
            "class E(model.EncoderBlock):\n    def forward(self, x, mask=None):\n"
            "        return model.EncoderBlock.forward(self, x, mask)\n",
            "course class's forward",
        ),
        (
            "3.4",
            "class H(nn.Module):\n    def __init__(self, config, emb):\n"
            "        super().__init__()\n        self.head = model.MLMHead(config)\n",
            "uses MLMHead",
        ),
        (
            "3.5",
            "def rotate(x):\n    return model.apply_rotary(x, *model.rotary_tables(x.shape[-2], x.shape[-1]))\n",
            "uses apply_rotary",
        ),
        (
            "4.4",
            "def no_context_token_loss(unigram, visible, targets, **rule):\n"
            "    return baselines.no_context_token_loss(unigram, visible, targets, **rule)\n",
            "uses no_context_token_loss",
        ),
        (
            "4.4",
            "def loss(unigram, visible, targets, **rule):\n"
            "    probs = counts.no_context_probs(visible)\n"
            "    return -probs.gather(1, targets[:, None]).log().squeeze(1)\n",
            "uses no_context_probs",
        ),
    ],
)
def test_handing_in_the_reference_is_recognised(number, source, reason):
    assert reason in grade.reference_use(number, source)


def test_no_solution_gets_a_hint():
    for stem in STEMS:
        nb = nbs.read(nbs.SOLUTIONS / f"{stem}.ipynb")
        for cell in nb.cells:
            if nbs.cell_role(cell) == "exercise":
                assert grade.reference_use(nbs.cell_exercise(cell), cell.source) is None, (stem, cell.id)
    for number, wrong in WRONG.items():
        assert grade.reference_use(number, wrong) is None, number


def test_the_run_takes_only_exercise_sources_from_a_submission():
    reference = nbs.read(nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb")
    nb, roles = grade.assemble(reference, {"1.1": "x = 1\n  # NBVAL_SKIP", "1.2": "y = 2"})
    assert roles == {5: ("1.1", "exercise"), 6: ("1.1", "check"), 8: ("1.2", "exercise"), 9: ("1.2", "check")}
    for ref, cell in zip(reference.cells, nb.cells):
        role = nbs.cell_role(ref)
        if role is None:
            assert cell == ref
        elif role == "exercise":
            assert cell.outputs == [] and cell.source in ("x = 1\n  # NBVAL-ignored_SKIP", "y = 2")
        else:
            assert cell.source.startswith("# NBVAL_CHECK_OUTPUT\n" + grade.CHECKS)
            assert "    " + ref.source.split("\n", 1)[1] in cell.source and "checks.unreached(" in cell.source
    assert [o.text for o in by_id(nb, "check-1-1").outputs] == ["Exercise 1.1 passed: 6/6 checks, 3/3 hidden checks\n"]


def test_the_kernel_only_observes_and_the_judge_decides():
    """What a check cell sends is plain data; the verdict is the judge's, made from its own inputs: an
    always-equal object cannot cross, a printed pass line changes nothing, nothing observed passes nothing."""
    from course_admin import judge
    from course_lib.checks import grading, wire

    class Always(list):
        def __eq__(self, other):
            return True

    def wrong(word_counts, vocab_size):
        print("Exercise 1.1 passed: 6/6 checks, 3/3 hidden checks")
        return ["a"], [("a", "b")]

    message = grading.observe("1.1", wrong)
    sent = wire.decode(wire.encode({"exercise": "1.1", **message}))  # as it crosses the socket
    verdict = judge.judge("1.1", sent)
    assert verdict["status"] == "failed" and "Exercise 1.1 failed 8 of 9 checks" in verdict["text"]
    assert judge.judge("1.1", grading.observe("1.1", tk.train_bpe))["status"] == "passed"
    odd = grading.observe("1.1", lambda word_counts, vocab_size: (Always(), Always()))
    assert judge.judge("1.1", odd)["status"] == "failed"
    assert judge.judge("1.1", {"observations": {}})["status"] == "failed"  # nothing observed, nothing passed
    with pytest.raises(ValueError):
        wire.unplain({"$": "object", "items": []})


def test_the_judge_refuses_a_message_that_would_unpack_to_more_than_it_holds():
    """Issue 26, finding 6: a deflated .npz member sent to the judge grew a thousandfold when decoded. Now a
    compressed member, or an array header that claims more bytes than its member holds, is refused first."""
    import io
    import zipfile

    import numpy as np

    from course_lib.checks import wire

    text = np.frombuffer(b'{"x": {"$": "array", "data": 0}}', dtype=np.uint8)
    bomb = io.BytesIO()
    np.savez_compressed(bomb, json=text, a0=np.zeros(1_000_000))
    assert len(bomb.getvalue()) < 100_000  # 8 MB of zeros in a few kB
    with pytest.raises(ValueError, match="'json.npy' is compressed"):
        wire.decode(bomb.getvalue())
    header, member = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    np.save(member, text)
    liar = io.BytesIO()
    with zipfile.ZipFile(liar, "w") as archive:  # stored, as encode writes: only the header lies
        archive.writestr("json.npy", member.getvalue())
        archive.writestr("a0.npy", header.getvalue() + bytes(64))
    with pytest.raises(ValueError, match="'a0.npy' claims 8000000000000 bytes"):
        wire.decode(liar.getvalue())
    with pytest.raises(ValueError, match="not a message"):
        wire.decode(b"not a zip")
    assert wire.decode(wire.encode({"x": wire.plain(np.arange(3.0))}))["x"]["data"].tolist() == [0.0, 1.0, 2.0]


def test_the_judge_runs_under_a_memory_limit(tmp_path):
    """Issue 26, finding 6, the second wall: past its limit an allocation in the judge fails, the host does not."""
    code = (
        "from course_admin import judge\njudge.limit_memory(256 << 20)\n"
        "try:\n    bytearray(1 << 30)\nexcept MemoryError:\n    print('MemoryError')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "MemoryError", done.stderr
    (tmp_path / "lib").mkdir()
    referee = grade._start_judge(str(tmp_path / "judge.sock"), tmp_path, "01", grade.allowed_environment(os.environ))
    try:
        limits = Path(f"/proc/{referee.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max data size"))
        assert line.split()[3:5] == [str(judge.MEMORY)] * 2, line
    finally:
        referee.kill()
        referee.wait()


def test_the_kernels_library_has_stubs_that_the_judge_restores():
    """While grading, the course's implementation of an exercise is a stub that raises; the judge hands its
    source back once every exercise that stubs it has been judged, and restoring keeps the function object."""
    from course_admin import judge
    from course_lib.checks import grading

    library = grade.library_files()
    exercises = registry.for_notebook("01")
    stubbed = judge.stubbed(library, exercises)
    module = type(sys)("course_lib_stubbed_for_test")
    exec(compile(stubbed["tokenization.py"], "tokenization.py", "exec"), vars(module))
    with pytest.raises(RuntimeError, match="tokenization:train_bpe is not available while grading"):
        module.train_bpe({"ab": 1}, 3)
    assert judge.restorable({"1.1"}, exercises) == exercises[0].implementations
    assert judge.restorable(set(), exercises) == set()
    before = module.train_bpe
    sys.modules[module.__name__] = module
    try:
        grading.restore([{**judge.implementation(library, "tokenization:train_bpe"), "module": module.__name__}])
    finally:
        del sys.modules[module.__name__]
    assert module.train_bpe is before and before({"ab": 2, "b": 1}, 3) == tk.train_bpe({"ab": 2, "b": 1}, 3)


def test_a_run_sees_a_stubbed_copy_of_the_library_and_not_the_course():
    """The kernel imports course_lib from the run's copy, with the notebook's answers stubbed; the course's
    own course_lib and solutions cannot be seen (under bubblewrap) and are left as they were."""
    from course_admin import sandbox

    before = grade.LIBRARY.joinpath("tokenization.py").read_bytes()
    unseen = ""
    if sandbox.level() == "bwrap":
        unseen = "".join(
            f"assert not pathlib.Path({str(p)!r}).exists()\n"
            for p in (nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb", grade.LIBRARY / "tokenization.py")
        )
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import course_lib, pathlib\nfrom course_lib import tokenization\n"
                "assert 'course-grade-' in course_lib.__file__, course_lib.__file__\n" + unseen
            ),
            nbformat.v4.new_code_cell("tokenization.train_bpe({'ab': 1}, 3)"),
        ]
    )
    run = grade.run_nbval(nb, timeout=60, notebook="01")
    assert run.outcomes[0] == ("passed", ""), run.outcomes
    assert run.outcomes[1][0] == "failed" and "not available while grading" in run.outcomes[1][1]
    assert grade.LIBRARY.joinpath("tokenization.py").read_bytes() == before


def test_reference_cells_that_need_a_withheld_answer_are_found_by_running_the_reference(monkeypatch):
    """Cell 3 uses an answer still withheld; skipping it, cell 4 misses what 3 defined: both are skipped, found
    in as many runs as it takes; a reference solution that fails under the grader is an error, not a skip."""
    reference = nbs.read(nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb")
    runs = []

    def run_nbval(nb, timeout, library, threads=None, notebook=None, **limits):
        skipped = {i for i, c in enumerate(c for c in nb.cells if c.cell_type == "code") if "NBVAL_SKIP" in c.source}
        runs.append(skipped)
        failing = {3} if not skipped else {4} - skipped
        outcomes = {i: ("failed" if i in failing else "skipped" if i in skipped else "passed", "") for i in range(12)}
        return grade.Run(outcomes, {"1.1": {"status": "passed"}, "1.2": {"status": verdict}})

    monkeypatch.setattr(grade, "run_nbval", run_nbval)
    monkeypatch.setattr(grade, "_WITHHELD", {})
    verdict = "passed"
    assert grade.withheld_cells(reference, "01_bpe_tokenizer", {"a.py": b""}, 30) == [3, 4]
    assert runs == [set(), {3}, {3, 4}]
    assert grade.withheld_cells(reference, "01_bpe_tokenizer", {"a.py": b""}, 30) == [3, 4] and len(runs) == 3
    verdict = "failed"
    with pytest.raises(RuntimeError, match="the reference solution of 01_bpe_tokenizer does not pass"):
        grade.withheld_cells(reference, "01_bpe_tokenizer", {"a.py": b"changed"}, 30)


def test_the_references_of_different_notebooks_run_side_by_side_before_the_submissions(tmp_path, monkeypatch):
    """With --jobs 2 and submissions of two notebooks, the two references are graded at the same time (each
    waits at a barrier for the other: with one lock for every reference, the first would wait in vain), and
    before any submission; an unreadable file, or a link, starts no reference run."""
    meeting, calls = threading.Barrier(2, timeout=20), []

    def run_nbval(nb, timeout, library, threads=None, notebook=None, **limits):
        first = notebook not in {n for n, _ in calls}
        calls.append((notebook, "reference" if first else "submission"))
        if first:
            meeting.wait()
        passed = {"status": "passed", "text": ""}
        return grade.Run(
            {i: ("passed", "") for i in range(80)}, {e.id: passed for e in registry.for_notebook(notebook)}
        )

    monkeypatch.setattr(grade, "run_nbval", run_nbval)
    monkeypatch.setattr(grade, "_WITHHELD", {})
    paths = [
        save(submission(stem), tmp_path / f"{name}.ipynb")
        for name, stem in [("ann", "01_bpe_tokenizer"), ("ben", "01_bpe_tokenizer"), ("cy", "02_masking_collator")]
    ]
    (tmp_path / "03_transformer_encoder.ipynb").write_text("{")  # named for 03, unreadable: no run
    (tmp_path / "link.ipynb").symlink_to(paths[0])
    graded = grade.grade([*paths, tmp_path / "03_transformer_encoder.ipynb", tmp_path / "link.ipynb"], jobs=2)
    assert not meeting.broken
    assert sorted(calls[:2]) == [("01", "reference"), ("02", "reference")]
    assert sorted(calls[2:]) == [("01", "submission"), ("01", "submission"), ("02", "submission")]
    assert [all(r.status == "passed" for r in g.results) for g in graded] == [True, True, True, False, False]
    assert grade.notebook_of(tmp_path / "link.ipynb", grade.load_references()) is None


def test_a_timeout_costs_only_its_exercise_and_the_rest_is_rerun(tmp_path, monkeypatch):
    """The rerun logic, with a stand-in for nbval: the run stops in 1.1's check cell (6)."""
    runs = []

    def run_nbval(nb, timeout, library, threads=None, notebook=None, **limits):
        runs.append([c.source for c in nb.cells if nbs.cell_role(c) == "exercise"])
        if "while True" in runs[-1][0]:
            return grade.Run(
                {i: ("passed", "") for i in range(6)} | {6: ("timeout", "Timeout"), 7: ("skipped", "")}, {}
            )
        passed = {"status": "passed", "text": ""}
        return grade.Run({i: ("passed", "") for i in range(21)}, {"1.1": passed, "1.2": passed})

    monkeypatch.setattr(grade, "run_nbval", run_nbval)
    monkeypatch.setattr(grade, "withheld_cells", lambda *args, **kwargs: [])
    graded = grade.grade([save(submission("01_bpe_tokenizer", {"1.1": LOOP}), tmp_path / "tim.ipynb")])[0]
    assert by_exercise(graded) == {"1.1": (0, "timeout"), "1.2": (4, "passed")}
    assert len(runs) == 2 and "while True" not in runs[1][0]
    # the rerun has the course's implementation standing in, never the solution notebook's cell
    assert registry.STAND_INS["1.1"] in runs[1][0] and nbs.BEGIN not in runs[1][0]


# --------------------------------------------------------------------------- real nbval runs


@pytest.fixture(scope="module")
def graded_01(light_solutions, tmp_path_factory):
    """Notebook 01 submissions, graded in one call (two at a time) against the light solution."""
    folder = tmp_path_factory.mktemp("submissions")
    stem = "01_bpe_tokenizer"
    paths = [
        save(submission(stem, {"1.1": CHEAT_1_1}), folder / "cheat.ipynb"),
        save(fake_outputs(submission(stem, {"1.2": WRONG["1.2"]})), folder / "wrong.ipynb"),
        save(fake_outputs(nbs.read(nbs.NOTEBOOKS / f"{stem}.ipynb")), folder / "faker.ipynb"),
        save(submission(stem, {"1.1": PATCH_CHECKER, "1.2": PATCH_PRINT}), folder / "patcher.ipynb"),
    ]
    (folder / "broken.ipynb").write_text('{"cells": [')
    (folder / "01_bpe_tokenizer_schema.ipynb").write_text(json.dumps({"cells": "none", "nbformat": 4}))
    paths += [folder / "broken.ipynb", folder / "01_bpe_tokenizer_schema.ipynb"]
    paths.append(save(submission(stem, {"1.2": LEAKER}), folder / "leaker.ipynb"))
    peeker = submission(stem, {"1.2": PEEKER})  # exercise 1.1's cell deleted: what stands in for it?
    peeker.cells = [c for c in peeker.cells if not (nbs.cell_role(c) == "exercise" and nbs.cell_exercise(c) == "1.1")]
    paths.append(save(peeker, folder / "peeker.ipynb"))
    # 30 s a cell: none loops here, and the suite may run beside another worker (make test: pytest -n 2)
    os.environ[SECRET] = "tok-5ecret-of-the-instructor"
    try:
        return {g.student: g for g in grade.grade(paths, light_solutions, timeout=30, jobs=2)}
    finally:
        del os.environ[SECRET]


SECRET = "INSTRUCTOR_API_TOKEN"
LEAKER = (
    "import os\n\n\ndef bpe_encode_word(word, merges):  # says what the grader's environment holds\n"
    f"    raise RuntimeError('token: ' + os.environ.get('{SECRET}', 'absent'))\n"
)


PEEKER = """\
import inspect


def bpe_encode_word(word, merges):  # shows what the kernel holds of exercise 1.1's answer
    try:
        shown = inspect.getsource(train_bpe)
    except Exception as error:
        shown = f"none ({type(error).__name__})"
    cells = [cell for cell in In if "BEGIN SOLUTION" in cell]
    raise RuntimeError(f"solution cells in the history: {len(cells)}; source of train_bpe: {shown[:400]}")
"""


def test_nothing_of_the_solution_notebook_enters_the_kernel_for_a_missing_exercise(graded_01):
    graded = graded_01["peeker"]
    assert by_exercise(graded) == {"1.1": (0, "missing"), "1.2": (0, "failed")}
    message = graded.results[1].message
    assert "solution cells in the history: 0; source of train_bpe: none (OSError)" in message, message
    assert "BEGIN SOLUTION" not in grade.feedback(list(graded_01.values()), "peeker")
    assert not any("reference cell" in note for note in graded.notes)  # the stand-in served the cells after it


def test_the_graders_environment_does_not_reach_a_run(graded_01):
    row = graded_01["leaker"].results[1]
    assert (row.exercise, row.status, row.points) == ("1.2", "failed", 0)
    assert "token: absent" in row.message and "5ecret" not in row.message
    assert "5ecret" not in grade.feedback(list(graded_01.values()), "leaker")


def test_the_run_environment_is_an_allowlist():
    env = grade.allowed_environment(
        {
            "PATH": "/bin",
            "LC_ALL": "C",
            "COURSE_DATA_DIR": "/d",
            "AWS_SECRET_ACCESS_KEY": "x",
            "RANK": "3",
            "HOME": "/root",
        }
    )
    assert env == {"PATH": "/bin", "LC_ALL": "C", "COURSE_DATA_DIR": "/d"}


def test_code_special_cased_to_the_visible_checks_loses_that_exercise(graded_01):
    assert by_exercise(graded_01["cheat"]) == {"1.1": (0, "failed"), "1.2": (4, "passed")}
    assert "hidden: five letters, another seed" in graded_01["cheat"].results[0].message


def test_a_wrong_exercise_loses_exactly_that_exercise_whatever_its_stored_outputs(graded_01):
    assert by_exercise(graded_01["wrong"]) == {"1.1": (6, "passed"), "1.2": (0, "failed")}
    assert "earliest-learned merge first" in graded_01["wrong"].results[1].message
    assert [r.max_points for r in graded_01["wrong"].results] == [6, 4]  # the points come from the course


def test_edited_outputs_alone_earn_nothing(graded_01):
    assert by_exercise(graded_01["faker"]) == {"1.1": (0, "failed"), "1.2": (0, "failed")}
    assert "NotImplementedError: Exercise 1.1" in graded_01["faker"].results[0].message


STUBBORN = """\
import signal, time

signal.signal(signal.SIGINT, signal.SIG_IGN)  # nbval's interrupt at the time limit does nothing
while True:  # and output keeps coming, which nbval would wait for
    print("still here", flush=True)
    time.sleep(1)
"""


@pytest.fixture(scope="module")
def stopped(light_solutions, tmp_path_factory):
    """Two submissions of notebook 01 that never end their 1.1 cell, graded side by side in one call (each
    waits for the time limit, is stopped, and runs the notebook again): the looper, which nbval interrupts at
    --timeout, and the stubborn one, which ignores the interrupt and is ended by the watchdog. Returns the
    graded files and the durations of the runs the watchdog stopped."""
    folder = tmp_path_factory.mktemp("stopped")
    paths = [
        save(submission("01_bpe_tokenizer", {"1.1": LOOP}), folder / "looper.ipynb"),
        save(submission("01_bpe_tokenizer", {"1.1": STUBBORN}), folder / "stubborn.ipynb"),
    ]
    timings = []
    real = grade.run_nbval

    def timed(*args, **kwargs):
        start = time.monotonic()
        run = real(*args, **kwargs)
        if any("watchdog stopped the run" in note for note in run.notes):
            timings.append(time.monotonic() - start)
        return run

    grade.run_nbval = timed
    try:
        # 20 s a cell: with 10, the rerun after the stop (a fresh kernel) timed out once in 1.2, on a fresh clone's
        # run that was slow all through (15.6 minutes of tests); which of its cells ran past 10 s was not recorded
        graded = {g.student: g for g in grade.grade(paths, light_solutions, timeout=20, jobs=2)}
    finally:
        grade.run_nbval = real
    return graded, timings


@pytest.mark.slow  # waits for the time limit, kills the kernel, and runs the notebook again
def test_an_infinite_loop_costs_only_its_exercise(stopped):
    graded, _ = stopped
    assert by_exercise(graded["looper"]) == {"1.1": (0, "timeout"), "1.2": (4, "passed")}


@pytest.mark.slow  # waits for the time limit and the watchdog, and runs the notebook again
def test_a_cell_that_ignores_the_interrupt_is_stopped_by_the_watchdog(stopped):
    graded, timings = stopped
    assert by_exercise(graded["stubborn"]) == {"1.1": (0, "timeout"), "1.2": (4, "passed")}
    assert any("watchdog stopped the run" in note for note in graded["stubborn"].notes)
    # the stubborn run: its kernel's start and the cells before, then --timeout + the watchdog's grace at most
    assert len(timings) == 1 and timings[0] < 20 + grade.GRACE + 45, timings
    print(f"the stubborn run took {timings[0]:.1f} s under --timeout 20")


def test_patching_the_checker_or_print_earns_nothing(graded_01):
    results = graded_01["patcher"].results
    assert by_exercise(graded_01["patcher"]) == {"1.1": (0, "failed"), "1.2": (0, "failed")}
    assert "NameError" in results[0].message and "NameError" in results[1].message


def test_a_malformed_notebook_is_an_error_for_that_student_only(graded_01):
    broken, schema = graded_01["broken"], graded_01["01_bpe_tokenizer_schema"]
    assert broken.results[0].status == "error" and "broken.ipynb: not a readable notebook" in broken.results[0].message
    assert by_exercise(schema) == {"1.1": (0, "error"), "1.2": (0, "error")}
    assert "01_bpe_tokenizer_schema.ipynb: not a readable notebook" in schema.results[0].message


# Through the command line, against the light solutions: notebook 01 solved; for each of 02 to 08 one
# submission with every exercise wrong (each in its own way: WRONG), so that every exercise of the course fails
# through the grader, on its own checker's hidden cases; and erin's notebook 03 and grace's 04, each with its
# first exercise wrong and the rest solved (erin's 3.5 calls the checker's own helper): what comes after a wrong
# exercise is graded on its own. That every exercise's solution passes is shown by the reference runs: the
# grader grades each notebook's reference first, and a reference that fails any exercise is an error for each of
# the notebook's rows (the test expects none). (Until 2026-12-08 two submissions a notebook split the wrong
# exercises between them, 16 kernels: each exercise was graded once wrong beside solved ones and once solved.)
CLASS = [
    ("alice", "01_bpe_tokenizer", ()),
    *[
        (name, stem, tuple(e.id for e in registry.for_notebook(stem[:2])))
        for name, stem in [
            ("bob", "02_masking_collator"),
            ("dave", "03_transformer_encoder"),
            ("frank", "04_training_loop"),
            ("ivan", "05_multilingual_sampling"),
            ("ken", "06_embedding_transfer"),
            ("mia", "07_deepspeed_scaling"),
            ("olivia", "08_downstream"),
        ]
    ],
    ("erin", "03_transformer_encoder", ("3.1",)),  # and 3.2-3.5 solved, though they build on attention
    ("grace", "04_training_loop", ("4.1",)),  # and 4.2-4.4 solved, though the notebook trains with train_step
]
# Graded two at a time (--jobs 2): each kernel gets one math thread on a 2-core machine. (Against the full
# solutions, with two threads each, the kernels fought for the cores and the training cells of notebooks 05
# and 06 ran past 120 s.)


@pytest.mark.slow  # 11 kernels and the 8 references', among them 07's DeepSpeed engines
def test_grading_a_class_with_the_command(light_solutions, tmp_path, capsys):
    # erin's 3.5 calls the checker's own helper, which calls transformers' RoFormer: it passes, with a hint
    extra = {"erin": {"3.5": TWIN_USERS["calls the checker's own helper"][1]}}
    paths = [
        save(submission(stem, {n: WRONG[n] for n in wrong} | extra.get(name, {})), tmp_path / name / f"{stem}.ipynb")
        for name, stem, wrong in CLASS
    ]
    paths.append(save(submission("01_bpe_tokenizer", {"1.1": PATCH_CHECKER}), tmp_path / "mallory.ipynb"))
    (tmp_path / "broken.ipynb").write_text("not json")
    report, table = tmp_path / "grades.csv", tmp_path / "summary.md"
    assert (
        grade.main(
            [
                *map(str, paths),
                str(tmp_path / "broken.ipynb"),
                "--report",
                str(report),
                "--summary",
                str(table),
                "--feedback",
                str(tmp_path / "feedback"),
                "--jobs",
                "2",
                "--solutions",
                str(light_solutions),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(report.open()))
    ones = {e.id for e in registry.for_notebook("01")}  # wrong and cheating 1.x: graded_01's tests and mallory
    failed = {r["exercise"] for r in rows if r["status"] == "failed" and r["student"] != "mallory"}
    assert failed == set(registry.EXERCISES) - ones, "every exercise of notebooks 02 to 08 fails somewhere"
    passed = {r["exercise"] for r in rows if r["status"] == "passed"}
    assert passed == ones | {e.id for stem in ("03", "04") for e in registry.for_notebook(stem)} - {"3.1", "4.1"}
    for name, stem, wrong in CLASS:
        mine = [r for r in rows if r["student"] == name]
        assert mine and all(r["notebook"] == stem for r in mine)
        for r in mine:
            expected = ("failed", 0) if r["exercise"] in wrong else ("passed", float(r["max_points"]))
            assert (r["status"], float(r["points"])) == expected, r
            if r["exercise"] in wrong:  # its own checker found it, not a knock-on error of another wrong cell
                assert r["message"].startswith(f"Exercise {r['exercise']} failed "), r
    assert [(r["exercise"], r["status"]) for r in rows if r["student"] == "mallory"] == [
        ("1.1", "failed"),
        ("1.2", "passed"),
    ]
    assert [r["status"] for r in rows if r["student"] == "broken"] == ["error"]
    out = capsys.readouterr().out
    assert "| alice | 6/6 | 4/4 |" in table.read_text() and "| mallory | 0/6 failed | 4/4 |" in out
    assert "NameError" in (tmp_path / "feedback" / "mallory.md").read_text()
    assert "Exercise 2.2 failed" in (tmp_path / "feedback" / "bob.md").read_text()
    alice = (tmp_path / "feedback" / "alice.md").read_text()
    assert "- Exercise 1.1, the BPE training loop (train_bpe): 6/6, passed" in alice, "with the registry's titles"
    erin = (tmp_path / "feedback" / "erin.md").read_text()
    assert "while its checks ran, the code called RoFormerSelfAttention.apply_rotary_position_embeddings" in erin
    assert "the code called" not in alice  # nothing for an honest answer
    assert not any("reference cell" in f.read_text() for f in (tmp_path / "feedback").iterdir()), (
        "every cell of the solutions still runs with the stubs, and after the exercises without them"
    )


def test_without_bubblewrap_the_grader_says_what_it_falls_back_to(tmp_path, monkeypatch):
    import io

    (tmp_path / "x.ipynb").write_text("")
    log = io.StringIO()
    monkeypatch.setattr(grade.sandbox, "level", lambda prefer=None: "process")
    grade.grade([tmp_path / "x.ipynb"], notebook="01", log=log)
    assert log.getvalue().startswith(grade.sandbox.fallback_warning())
    monkeypatch.setattr(grade.sandbox, "level", lambda prefer=None: "bwrap")
    log = io.StringIO()
    grade.grade([tmp_path / "x.ipynb"], notebook="01", log=log)
    assert "warning" not in log.getvalue()


def test_told_the_notebook_an_unreadable_file_gets_a_row_per_exercise(tmp_path):
    (tmp_path / "x.ipynb").write_text("")
    graded = grade.grade([tmp_path / "x.ipynb"], notebook="01")[0]
    assert by_exercise(graded) == {"1.1": (0, "error"), "1.2": (0, "error")}


def test_an_odd_notebook_is_an_error_for_that_student_only(tmp_path):
    nb = submission("01_bpe_tokenizer")
    nb.metadata["course"] = "not a dict"
    by_id(nb, "exercise-1-1").metadata["course"] = ["nor this"]
    graded = grade.grade([save(nb, tmp_path / "odd.ipynb")])[0]
    assert [(r.status, r.points) for r in graded.results] == [("error", 0)] * len(graded.results)
    assert "odd.ipynb" in graded.results[0].message


# --------------------------------------------------------------------------- who a file is, and the summary


def results(student, notebook="01_bpe_tokenizer", points=(6, 0)):
    return [
        grade.Result(student, notebook, number, got, out_of, "passed" if got else "failed", "", f"{student}.ipynb")
        for number, got, out_of in zip(("1.1", "1.2"), points, (6, 4))
    ]


def test_the_student_is_where_the_file_was_collected_not_what_its_metadata_says(tmp_path):
    references = {"01_bpe_tokenizer": None}
    nb = nbformat.v4.new_notebook(metadata={"course": {"student": "bob"}})
    assert grade.student_name(nb, tmp_path / "alice.ipynb", references) == "alice"
    assert grade.student_name(nb, tmp_path / "alice" / "01_bpe_tokenizer.ipynb", references) == "alice"
    assert grade.claimed_name(nb, "alice") == (
        "the notebook's metadata names 'bob', but the file is 'alice''s: graded as 'alice'"
    )
    assert grade.claimed_name(nbformat.v4.new_notebook(metadata={"course": {"student": "alice"}}), "alice") is None


def test_two_files_of_the_same_student_and_notebook_are_never_merged(tmp_path):
    first = grade.Graded(tmp_path / "a" / "alice.ipynb", "alice", "01_bpe_tokenizer", results("alice", points=(6, 0)))
    second = grade.Graded(tmp_path / "b" / "alice.ipynb", "alice", "01_bpe_tokenizer", results("alice", points=(0, 4)))
    other = grade.Graded(tmp_path / "a" / "alice2.ipynb", "alice", "02_masking_collator", [])
    graded = grade.keep_apart([first, second, other])
    assert len({g.student for g in graded[:2]}) == 2 and graded[2].student == "alice"
    assert all(r.student == g.student for g in graded for r in g.results)
    table = grade.summary(graded)
    assert f"alice ({tmp_path / 'a' / 'alice.ipynb'}) | 6/6 | 0/4 failed | 6/10" in table
    assert f"alice ({tmp_path / 'b' / 'alice.ipynb'}) | 0/6 failed | 4/4 | 4/10" in table
    assert "2 files are 'alice''s notebook 01_bpe_tokenizer: each graded on its own" in table


def test_the_summary_is_a_well_formed_markdown_table():
    """Parsed by a Markdown parser: one header, every row as many cells as it, whatever the names hold."""
    from markdown_it import MarkdownIt

    graded = [
        grade.Graded(grade.Path("x.ipynb"), "ann | 1", "01_bpe_tokenizer", results("ann | 1")),
        grade.Graded(
            grade.Path("y.ipynb"),
            "bo\nb",
            "02_masking_collator",
            [
                grade.Result("bo\nb", "02_masking_collator", "2.1", 5, 5, "passed"),
            ],
            ["a note | with a pipe"],
        ),
        grade.Graded(grade.Path("z.ipynb"), "cy", "?", [grade.Result("cy", "?", "-", 0, 0, "error", "bad | file")]),
    ]
    tokens = MarkdownIt("commonmark").enable("table").parse(grade.summary(graded))
    rows, cells = [], 0
    for token in tokens:
        if token.type == "tr_open":
            cells = 0
        elif token.type in ("th_open", "td_open"):
            cells += 1
        elif token.type == "tr_close":
            rows.append(cells)
    assert rows == [5, 5, 5, 5], rows  # student, 1.1, 1.2, 2.1, total: the header and three students
    inline = [t.content for t in tokens if t.type == "inline"]
    assert "ann | 1" in inline or "ann \\| 1" in inline, inline  # the name kept whole, in one cell


def test_every_student_notebook_states_the_grading_rules_in_its_introduction():
    for path in sorted(nbs.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = nbs.read(path).cells
        title = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.get("id") != nbs.BADGE_ID)
        rules = cells[title + 1]
        assert rules.get("id") == nbs.RULES_ID and rules.cell_type == "markdown", path.name
        assert [line[:3] for line in rules.source.strip().splitlines()] == ["**H", "(2)", "(3)"], path.name
        assert "(1)" in rules.source and "hidden cases" in rules.source and "honest Python" in rules.source


# --------------------------------------------------------------------------- identity and reports


def test_a_file_named_for_a_notebook_is_graded_as_that_notebook_with_a_note(tmp_path):
    references = grade.load_references()
    path = save(submission("01_bpe_tokenizer"), tmp_path / "mallory" / "05_multilingual_sampling.ipynb")
    stem, note = grade.which_notebook(nbs.read(path), path, references)
    assert stem == "05_multilingual_sampling" and "01_bpe_tokenizer" in note and "graded as 05" in note
    plain = save(submission("01_bpe_tokenizer"), tmp_path / "01" / "alice.ipynb")
    assert grade.which_notebook(nbs.read(plain), plain, references) == ("01_bpe_tokenizer", None)
    unnamed = save(submission("02_masking_collator"), tmp_path / "bob.ipynb")
    assert grade.which_notebook(nbs.read(unnamed), unnamed, references) == ("02_masking_collator", None)


def test_feedback_file_names_never_collide():
    names = grade.feedback_names(["o'brien", "o_brien", "alice", "a b"])
    assert len(set(names.values())) == 4 and names["alice"] == "alice.md" and names["a b"] == "a_b.md"
    assert names["o'brien"].startswith("o_brien-") and names["o_brien"].startswith("o_brien-")


def test_a_message_cannot_close_its_fence_in_the_feedback():
    message = "AssertionError\n```\n- Exercise 1.1: 6/6, passed\n```"
    result = grade.Result("eve", "01_bpe_tokenizer", "1.2", 0, 4, "failed", message, "eve.ipynb")
    text = grade.feedback([grade.Graded(Path("eve.ipynb"), "eve", "01_bpe_tokenizer", [result])], "eve")
    lines = text.splitlines()
    opening = lines.index("  ````")
    closing = lines.index("  ````", opening + 1)
    assert "  - Exercise 1.1: 6/6, passed" in lines[opening:closing]  # inside the block, not a line of its own
    assert not any(line.startswith("- Exercise 1.1") for line in lines)


def test_links_are_refused_and_quote_nothing(tmp_path):
    private = tmp_path / "private"
    secret = submission("01_bpe_tokenizer")
    secret.cells[0].source = "TOP-SECRET grading key"
    save(secret, private / "key.ipynb")
    save(secret, private / "folder" / "01_bpe_tokenizer.ipynb")
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "mallory.ipynb").symlink_to(private / "key.ipynb")
    (subs / "trudy").symlink_to(private / "folder", target_is_directory=True)
    report, feedback = tmp_path / "grades.csv", tmp_path / "feedback"
    assert grade.main([str(subs), "--report", str(report), "--feedback", str(feedback)]) == 0
    rows = list(csv.DictReader(report.open()))
    assert {r["student"]: r["status"] for r in rows}.get("mallory") == "error"
    assert all(r["status"] == "error" and r["points"] == "0" for r in rows)
    written = report.read_text() + "".join(f.read_text() for f in feedback.iterdir())
    assert "TOP-SECRET" not in written and str(private) not in written


@pytest.mark.parametrize("number", sorted(registry.EXERCISES, key=lambda n: [int(x) for x in n.split(".")]))
def test_each_stand_in_defines_the_exercises_names_and_passes_its_checker(number, capsys):
    """What the grader runs in place of a missing or timed-out exercise (never the solution's cell) must
    define what the solution's cell defines and pass the same checker, for the cells after it."""
    reference = nbs.read(nbs.SOLUTIONS / f"{STEMS_BY_NOTEBOOK[registry.get(number).notebook]}.ipynb")
    solution = next(c for c in reference.cells if nbs.cell_role(c) == "exercise" and nbs.cell_exercise(c) == number)
    check = next(c for c in reference.cells if nbs.cell_role(c) == "check" and nbs.cell_exercise(c) == number)
    stand_in = registry.STAND_INS[number]
    assert "BEGIN SOLUTION" not in stand_in
    namespace: dict = {}
    exec(compile(stand_in, f"<stand-in {number}>", "exec"), namespace)
    assert grade.defined_names(solution.source) <= set(namespace)
    namespace["checks"] = checks
    exec(check.source, namespace)
    assert f"Exercise {number} passed" in capsys.readouterr().out


TWIN_USERS = {  # (exercise, a cell that hands in a library twin's answer, the call the grader must name)
    "calls the fused attention": (
        "3.1",
        "import torch.nn.functional as F\n\ndef attention(q, k, v, mask=None):\n"
        "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n",
        "torch._C._nn.scaled_dot_product_attention",
    ),
    "calls aten's math attention": (
        "3.1",
        "import torch\n\ndef attention(q, k, v, mask=None):\n"
        "    return torch.ops.aten._scaled_dot_product_attention_math(q, k, v, attn_mask=mask)[0]\n",
        "_scaled_dot_product_attention_math",
    ),
    "calls the checker's own helper": (  # issue 26, finding 8: it passed, and no one heard of it
        "3.5",
        "from course_lib.checks import nb03\n\ndef rotate(x, base=10000.0):\n    return nb03._roformer_rotation(x)\n",
        "RoFormerSelfAttention.apply_rotary_position_embeddings",
    ),
    "trains with tokenizers": (
        "1.1",
        "from course_lib import tokenization as tk\n\ndef train_bpe(word_counts, vocab_size):\n"
        "    from tokenizers import models\n    models.BPE().get_trainer()\n    raise RuntimeError('and then')\n",
        "get_trainer of tokenizers.models",
    ),
    "switches the recording off": (
        "3.1",
        "import sys, torch.nn.functional as F\n\ndef attention(q, k, v, mask=None):\n    sys.setprofile(None)\n"
        "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n",
        "nothing",
    ),
}


def _observed(number: str, source: str) -> dict:
    """grading.observe on the function a cell defines, in this process (no judge: its calls are what count)."""
    from course_lib.checks import grading

    namespace: dict = {}
    exec(compile(source, "<student cell>", "exec"), namespace)
    check = next(
        c
        for c in nbs.read(nbs.SOLUTIONS / f"{STEMS_BY_NOTEBOOK[registry.get(number).notebook]}.ipynb").cells
        if nbs.cell_role(c) == "check" and nbs.cell_exercise(c) == number
    )
    arguments = check.source.split("(", 1)[1].rsplit(")", 1)[0].split(", ")
    return grading.observe(number, *[namespace[name] for name in arguments])


@pytest.mark.parametrize("name", TWIN_USERS)
def test_calls_into_a_library_twin_are_recorded_while_observed(name):
    number, source, call = TWIN_USERS[name]
    calls = _observed(number, source).get("library_calls", [])
    assert any(c.startswith(call) for c in calls), calls
    hint = judge.hint({"library_calls": calls})["hint"]
    assert call in hint and "library's version of the answer" in hint


@pytest.mark.parametrize("number", sorted(registry.TWINS))
def test_the_solutions_call_no_twin_of_their_own_exercise(number, light_solutions):
    """The twins are names the solution does not use: the recording names nothing for an honest answer."""
    nb = nbs.read(light_solutions / f"{STEMS_BY_NOTEBOOK[registry.get(number).notebook]}.ipynb")
    cells = [c for c in nb.cells[1:] if c.cell_type == "code" and nbs.cell_role(c) != "check"]
    end = next(i for i, c in enumerate(cells) if nbs.cell_exercise(c) == number and nbs.cell_role(c) == "exercise")
    source = "\n".join(c.source for c in cells[: end + 1])
    assert "library_calls" not in _observed(number, source)
