"""The Python API reads like one: `dir(hawqc)` lists the public names, each documented (the options'
fields too), paths may be `str` or `Path`, and errors name the argument, not a command-line flag."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import JET_TAGGER

import hawqc

PUBLIC = {
    "CompileOptions", "CompileResult", "HawqcError", "HlsSettings", "Pass", "PassManager", "PassResult",
    "PyTorchOptions", "UserInputError", "compile", "lift", "load", "option", "register_pass", "save",
}  # fmt: skip


def test_dir_lists_the_public_names() -> None:
    assert set(dir(hawqc)) == PUBLIC | {"__version__"}
    assert set(hawqc.__all__) == PUBLIC


def test_import_hawqc_stays_cheap() -> None:
    # The names resolve on first use: importing the package loads neither torch nor hls4ml.
    code = "import sys, hawqc; dir(hawqc); print(sorted(m for m in ('torch', 'hls4ml', 'onnx') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_has_its_own_docstring(name: str) -> None:
    obj = getattr(hawqc, name)
    doc = inspect.getdoc(obj) or ""
    # A dataclass without a docstring gets its signature as one; an exception class inherits one.
    assert doc and not doc.startswith(f"{obj.__name__}(") and doc != inspect.getdoc(Exception), name


@pytest.mark.parametrize("name", ["CompileOptions", "CompileResult", "HlsSettings", "PyTorchOptions"])
def test_every_field_of_the_options_is_documented(name: str) -> None:
    cls = getattr(hawqc, name)
    documented = set(re.findall(r"^ {8}(\w+): ", cls.__doc__, re.M))
    assert documented == {field.name for field in dataclasses.fields(cls)}


def test_paths_may_be_strings(tmp_path) -> None:
    options = hawqc.CompileOptions(inputs=str(tmp_path / "x.npy"), outputs=str(tmp_path / "y.npy"))
    assert options.inputs == tmp_path / "x.npy" and options.outputs == tmp_path / "y.npy"
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = hawqc.compile(str(JET_TAGGER), str(tmp_path / "proj"), hawqc.CompileOptions(inputs=str(tmp_path / "x.npy")))
    assert result.verify.passed and result.verify.samples == 4
    model = hawqc.load(str(JET_TAGGER))
    hawqc.save(model, str(tmp_path / "copy.onnx"))
    assert hawqc.load(tmp_path / "copy.onnx").graph.num_nodes() == model.graph.num_nodes()


@pytest.mark.parametrize(
    "make, python_name, flag, flag_value",
    [
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(verify_samples=-1)), "verify_samples must be", "--verify", "-1"),
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(seed=-1)), "seed must be", "--seed", "-1"),
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(io_type="io_serial")), "io_type must be", "--io-type", "io_serial"),
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(project_name="int")), "project_name 'int'", "--project-name", "int"),
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(tolerance=-1.0)), "tolerance must be", "--tolerance", "-1"),
        (lambda: hawqc.compile(JET_TAGGER, "p", hawqc.CompileOptions(default_precision="fixed<1>")), "default_precision 'fixed<1>'", "--default-precision", "fixed<1>"),
        (lambda: hawqc.HlsSettings(clock_period=-1.0), "clock_period must be", "--clock-period", "-1"),
        (lambda: hawqc.HlsSettings(reuse_factor=0), "reuse_factor must be", "--reuse-factor", "0"),
        (lambda: hawqc.HlsSettings(strategy="fast"), "strategy must be", "--strategy", "fast"),
        (lambda: hawqc.HlsSettings(part="a b"), "part 'a b'", "--part", "a b"),
    ],
)  # fmt: skip
def test_errors_name_the_argument_in_python_and_the_flag_on_the_command_line(
    make, python_name, flag, flag_value, tmp_path, monkeypatch, capsys
) -> None:
    from conftest import one_error_line, run_cli

    from hawqc.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(hawqc.UserInputError) as info:
        make()
    assert str(info.value).startswith(python_name) and "--" not in str(info.value)
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", f"{flag}={flag_value}")
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"hawqc: error: {flag}"), line
    assert f"error: {python_name}" not in line


def test_a_pickled_module_names_its_opt_in_for_python_and_the_command_line(tmp_path) -> None:
    from hawqc.errors import UserInputError

    err = UserInputError("x.pt: pickled; pass {} if you trust it", option="allow_pickle=True")
    assert str(err) == "x.pt: pickled; pass allow_pickle=True if you trust it"
    from hawqc.cli.run import as_flags

    assert as_flags(err) == "x.pt: pickled; pass --allow-pickle if you trust it"
