"""Reliability of `hf-gru distill` (issue 31): bad input refused before anything is written, with the option, the
file and the fix named; a teacher killed mid fine-tuning resumes to the very teacher an uninterrupted run gives.

Each test failed on the code before the fix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distillation import MINILM, TEXTS, _tiny_bert
from transformers import AutoTokenizer

import hf_gru
from hf_gru.cli import main
from hf_gru.distillation import augment as augment_module
from hf_gru.distillation.arguments import DistillationArguments
from hf_gru.distillation.teacher import check_model_reference
from hf_gru.distillation.unlabeled import load_unlabeled_texts
from hf_gru.run_directory import RESULTS_FILE, TEACHER_DIR, TEACHER_LOGITS_DIR, WEIGHTS_FILE

STUDENT = ["--preset", "small", "--embedding_size", "16", "--num_train_epochs", "1", "--report_to", "none"]
STUDENT += ["--save_strategy", "no", "--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
STUDENT += ["--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(MINILM.get_model_path()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 short reviews with their own validation and test splits (so --seed does not change the training split)."""
    data = tmp_path_factory.mktemp("reviews")
    rows = [{"text": f"{TEXTS[i % 4]} {i}", "label": ("neg", "pos")[i % 2]} for i in range(40)]
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return data


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tokenizer) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("teacher"), tokenizer)


def _distill(dataset: Path, teacher: Path, output: Path, *extra: str) -> int:
    return main(["distill", "--dataset", str(dataset), "--teacher", str(teacher), "--output_dir", str(output), *STUDENT,
                 *extra])  # fmt: skip


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# -------------------------------------------------------------- 3: a refused --reuse_teacher_logits copies nothing


def test_a_refused_reuse_of_teacher_logits_leaves_nothing_and_the_corrected_command_runs(
    tmp_path, dataset, teacher, tokenizer, capsys
):
    first = tmp_path / "first"
    assert _distill(dataset, teacher, first, "--augment_copies", "2", "--seed", "1") == 0
    reuse = ["--reuse_teacher_logits", str(first / TEACHER_LOGITS_DIR), "--augment_copies", "2", "--seed", "2"]
    second = tmp_path / "second"
    assert _distill(dataset, teacher, second, *reuse) == 2  # augmented with seed 2, labelled with seed 1
    assert "--augment_seed" in _one_line_error(capsys)
    assert not second.exists()
    other_teacher = _tiny_bert(tmp_path, tokenizer, seed=7)
    assert _distill(dataset, other_teacher, second, *reuse, "--augment_seed", "1") == 2
    line = _one_line_error(capsys)
    assert "--reuse_teacher_logits" in line and f"not '{other_teacher}'" in line, line
    assert not second.exists()
    assert _distill(dataset, teacher, second, *reuse, "--augment_seed", "1") == 0  # the corrected command
    assert (second / TEACHER_LOGITS_DIR / "fingerprint.json").is_file()


# ------------------------------------------------------------------------- 4: loss weights that train nonsense


@pytest.mark.parametrize(
    "option",
    [("--gold_weight", "-1"), ("--gold_weight", "nan"), ("--temperature", "inf"), ("--temperature", "0"),
     ("--teacher_epochs", "0"), ("--teacher_learning_rate", "-0.00005"), ("--teacher_batch_size", "0"),
     ("--labelling_batch_size", "0"), ("--teacher_max_length", "0")],
)  # fmt: skip
def test_negative_or_non_finite_loss_settings_are_refused(tmp_path, dataset, teacher, capsys, option):
    output = tmp_path / "out"
    assert _distill(dataset, teacher, output, *option) == 2
    assert option[0] in _one_line_error(capsys)
    assert not output.exists()
    DistillationArguments(teacher="t", gold_weight=0.0)  # zero is allowed: no gold-label term


# ------------------------------------------------------------------------------- 5: unbounded augmentation


def test_an_augmentation_larger_than_memory_is_refused_before_it_starts(
    tmp_path, dataset, teacher, capsys, monkeypatch
):
    def never(self, text, rng):
        raise AssertionError("augmentation started instead of being refused")

    monkeypatch.setattr(augment_module.Augmenter, "augment_one", never)
    output = tmp_path / "out"
    assert _distill(dataset, teacher, output, "--augment_copies", "100000000") == 2
    line = _one_line_error(capsys)
    assert "--augment_copies 100000000" in line and "memory" in line and "or fewer" in line, line
    assert not output.exists()


def test_augmentation_reports_its_progress(capsys):
    augment_module.augment_texts(TEXTS * 20, augment_module.AugmentationSettings(copies=3), "[MASK]")
    assert "augmenting" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 7, 8: bad --unlabeled files


def test_an_undecodable_unlabeled_file_is_named_with_its_line(tmp_path, dataset, teacher, capsys):
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_bytes(b"a fine review\nanother one\n\xf0\x28\x8c\x28 not utf-8\n")
    with pytest.raises(ValueError, match=rf"--unlabeled .*{unlabeled.name} line 3: invalid UTF-8"):
        load_unlabeled_texts(str(unlabeled))
    output = tmp_path / "out"
    assert _distill(dataset, teacher, output, "--unlabeled", str(unlabeled)) == 2
    assert "line 3" in _one_line_error(capsys)
    assert not output.exists()  # checked before the output directory is made (and before any teacher work)


@pytest.mark.parametrize("content", ["", "\n   \n\n"], ids=["empty", "blank lines"])
def test_an_unlabeled_file_without_texts_warns(tmp_path, caplog, content):
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hf_gru"):
        assert load_unlabeled_texts(str(unlabeled)) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "--unlabeled" in warnings[0].getMessage() and "no texts" in warnings[0].getMessage()


def test_a_pruned_student_vocabulary_keeps_the_pieces_of_the_unlabeled_texts(tmp_path, dataset, teacher):
    """The teacher labels the --unlabeled texts for the student: a vocabulary pruned to the training texts alone
    would turn their new words into [UNK] for it."""
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("zebras juggle xylophones\nquantum origami\n", encoding="utf-8")
    output = tmp_path / "out"
    assert _distill(dataset, teacher, output, "--unlabeled", str(unlabeled), "--prune_vocabulary", "yes") == 0
    student = AutoTokenizer.from_pretrained(output)
    assert len(student) < 1000  # pruned
    ids = student("zebras juggle xylophones quantum origami")["input_ids"]
    assert student.unk_token_id not in ids, student.convert_ids_to_tokens(ids)


# -------------------------------------------------------------------------------- 10: a missing teacher path


@pytest.mark.parametrize("option", ["--teacher", "--teacher-base"])
@pytest.mark.parametrize("form", ["absolute", "./relative", "in an existing folder", "two slashes"])
def test_a_missing_local_teacher_path_says_it_does_not_exist(tmp_path, dataset, capsys, monkeypatch, option, form):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    reference = {
        "absolute": str(tmp_path / "no-teacher"),
        "./relative": "./no-teacher",
        "in an existing folder": "models/teacher",
        "two slashes": "runs/sst2/teacher",
    }[form]
    output = tmp_path / "out"
    argv = ["distill", "--dataset", str(dataset), option, reference, "--output_dir", str(output), *STUDENT]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert f"--{option[2:].replace('-', '_')} {reference}" in line
    assert "does not exist" in line, line
    assert not output.exists()


def test_hub_ids_are_still_accepted_as_teachers():
    for reference in ("sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased", "org/model.v2-large"):
        check_model_reference(reference, "--teacher")  # Hub ids: left to the Hub client (or the offline packages)


# ------------------------------------------------------------------ teacher fine-tuning: kill -9, then resume

TEACHER_RUN = [
    "--teacher_max_train_samples", "32", "--teacher_max_length", "16", "--teacher_batch_size", "8",
    "--teacher_epochs", "2", "--teacher_save_steps", "2", "--max_length", "16", "--augment_copies", "0",
    "--seed", "5",
]  # fmt: skip


def _distill_process(data: Path, output: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`hf-gru distill --teacher_base MiniLM` in a child process, its output in `log` (a pipe could fill and stall)."""
    base = str(MINILM.get_model_path())
    argv = ["distill", "--dataset", str(data), "--teacher_base", base, "--output_dir", str(output), *STUDENT]
    code = str(Path(hf_gru.__file__).parents[1])  # the child runs the code under test, wherever pytest started
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": code}
    return subprocess.Popen(
        [sys.executable, "-m", "hf_gru.cli", *argv, *TEACHER_RUN, *extra],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _finished(process: subprocess.Popen, log: Path) -> str:
    process.wait(timeout=600)
    out = log.read_text()
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_a_teacher_killed_mid_fine_tuning_resumes_to_the_teacher_of_an_uninterrupted_run(tmp_path):
    """SIGKILL once the teacher has a complete checkpoint (step 2 of 8), then `--resume_from_checkpoint last`:
    the fine-tuning continues from the newest complete checkpoint (a half-written one is skipped: transformers'
    own get_last_checkpoint picked it and the resume failed), and the teacher's weights are bit-identical to an
    uninterrupted run's: same seed, CPU and thread count, and the Trainer restores optimizer, scheduler, RNG
    states and data order, so equality, not closeness, is the bar."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"text": f"{TEXTS[i % 4]} {i}", "label": ("neg", "pos")[i % 2]} for i in range(32)]
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[: 32 if split == "train" else 16])
        )

    straight = tmp_path / "straight"
    _finished(_distill_process(data, straight, tmp_path / "straight.log"), tmp_path / "straight.log")

    killed = tmp_path / "killed"
    process = _distill_process(data, killed, tmp_path / "killed.log")
    state = killed / TEACHER_DIR / "checkpoint-2" / "trainer_state.json"  # written last: the checkpoint is whole
    deadline = time.monotonic() + 600
    while not state.is_file():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / TEACHER_DIR / RESULTS_FILE).exists() and not (killed / TEACHER_DIR / WEIGHTS_FILE).exists()
    half = killed / TEACHER_DIR / "checkpoint-6"  # what a kill in the middle of a later save leaves: config only
    half.mkdir(exist_ok=True)
    shutil.copy(state.parent / "config.json", half / "config.json")

    resumed = _distill_process(data, killed, tmp_path / "resumed.log", "--resume_from_checkpoint", "last")
    out = _finished(resumed, tmp_path / "resumed.log")
    resumed_at = [line for line in out.splitlines() if "resuming the teacher's fine-tuning" in line]
    assert resumed_at, out[-3000:]
    step = int(resumed_at[0].split("at step ")[1].split()[0])
    assert 2 <= step < 6, resumed_at  # continued from a complete checkpoint, not from step 0 nor the cut-short one
    expected, got = load_file(straight / TEACHER_DIR / WEIGHTS_FILE), load_file(killed / TEACHER_DIR / WEIGHTS_FILE)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert not list((killed / TEACHER_DIR).glob("checkpoint-*"))
    assert (killed / WEIGHTS_FILE).is_file()  # and the student was distilled from it
