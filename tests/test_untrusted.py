"""Untrusted files and inputs: bounded time and memory, a named error (one CLI line), never a hang or a traceback."""

from __future__ import annotations

import re
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxxai import fuzz
from onnxxai.cli import main
from onnxxai.convert.pipeline import convert
from onnxxai.errors import ExternalDataError, InputError, MemoryLimitError, ModelFileError, ResourceLimitError, TimeLimitError
from onnxxai.model import load
from onnxxai.parity import run_onnxruntime
from onnxxai.preprocess import read_image
from onnxxai.proto import limits
from onnxxai.runtime import load_runtime
from onnxxai.testing import export


# -- time ---------------------------------------------------------------------------------------------
def test_loop_of_2_62_trips_ends_in_a_named_timeout_from_load(tmp_path: Path) -> None:
    path = tmp_path / "spin.onnx"
    onnx.save(fuzz.loop_model(), str(path))
    start = time.monotonic()
    with pytest.raises(TimeLimitError, match=r"Loop node 'spin'") as info:
        load(path, timeout=2)
    assert time.monotonic() - start < 2 + 5
    assert str(path) in str(info.value) and "onnxruntime" in info.value.stage
    assert f"unbounded nodes: Loop 'spin' (trip count {2**62})" in str(info.value)


def test_torch_loop_checks_the_deadline_each_iteration() -> None:
    _, _, module = convert(fuzz.loop_model(), "<spin>")
    start = time.monotonic()
    with limits.budget(timeout=0.5, stage="torch probe", label="spin.onnx"), pytest.raises(TimeLimitError) as info:
        module(torch.zeros(1, 4))
    assert time.monotonic() - start < 5
    assert "Loop node 'spin' (iteration" in str(info.value) and info.value.stage == "torch probe"
    _, _, short = convert(fuzz.loop_model(trips=3), "<three>")  # an ending loop is not affected
    with limits.budget(timeout=30):
        assert torch.equal(short(torch.zeros(1, 4)), torch.full((1, 4), 3.0))


def test_runtime_model_runs_are_cancelled_at_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "spin.onnx"
    onnx.save(fuzz.loop_model(), str(path))  # a fixed batch: the relaxed-batch check runs the file
    start = time.monotonic()
    with pytest.raises(TimeLimitError, match="relaxed-batch check"):
        load_runtime(path, timeout=1)
    assert time.monotonic() - start < 6
    onnx.save(fuzz.loop_model(batch="N"), str(path))
    runtime = load_runtime(path, timeout=1)
    start = time.monotonic()
    with pytest.raises(TimeLimitError, match="onnxruntime run"):
        runtime(np.zeros((1, 4), np.float32))
    assert time.monotonic() - start < 6
    # without a budget a run of an ending model is not watched, and the same function serves
    assert run_onnxruntime(fuzz.loop_model(trips=2), {"x": np.zeros((1, 4), np.float32)})[0].tolist() == [[2.0] * 4]


def _nested_ifs(depth: int, cond: str, name: str = "deep") -> list[onnx.NodeProto]:
    """Nodes computing ``{name}_out`` by Ifs nested ``depth`` deep on ``cond``, both branches holding the
    level below (2^(depth+1) - 2 subgraphs), the outermost If named ``name``."""
    leaf = helper.make_tensor("leaf_value", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Constant", [], ["v0"], value=leaf, name="leaf")], "leaf", [],
                              [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1])])
    for k in range(1, depth + 1):
        out = f"{name}_out" if k == depth else f"v{k}"
        node = helper.make_node("If", [cond], [out], then_branch=graph, else_branch=graph, name=name if k == depth else f"if{k}")
        graph = helper.make_graph([node], f"level{k}", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1])])
    return list(graph.node)


def _nested_ifs_file(tmp_path: Path, depth: int) -> Path:
    """deep.onnx in ``tmp_path``: x (N, 4) -> ``depth`` nested Ifs (:func:`_nested_ifs`) on ``sum(x) != 0``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
             helper.make_node("Cast", ["total"], ["cond"], to=TensorProto.BOOL, name="cond"), *_nested_ifs(depth, "cond")]
    graph = helper.make_graph(nodes, "deep", [x], [helper.make_tensor_value_info("deep_out", TensorProto.FLOAT, [1])])
    path = tmp_path / "deep.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _qdq_conv_with_nested_ifs(depth: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv (int8 weight through DQ) -> y: a group the QDQ pass asks onnxruntime about;
    beside it ``depth`` nested Ifs on ``sum(x) != 0`` whose graph optimization keeps onnxruntime busy."""
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "w8"), numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w8", "ws", "wz"], ["w"], name="dqw"),
             helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
             helper.make_node("Cast", ["total"], ["cond"], to=TensorProto.BOOL, name="cond"),
             *_nested_ifs(depth, "cond")]
    graph = helper.make_graph(nodes, "qdq_deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("deep_out", TensorProto.FLOAT, [1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_qdq_pass_builds_its_onnxruntime_session_under_the_time_budget() -> None:
    from onnxxai.proto.qdq import fuse_qdq_groups

    model = _qdq_conv_with_nested_ifs(12)  # 8190 subgraphs: onnxruntime's graph optimization takes seconds
    start = time.monotonic()
    with limits.budget(timeout=0.2, stage="normalization and conversion", label="qdq_deep.onnx"), \
            pytest.raises(TimeLimitError) as info:
        fuse_qdq_groups(model)  # the session used to be built outside the budget, and the pass fell back
    assert time.monotonic() - start < 0.2 + 5
    message = str(info.value)
    assert "onnxruntime's session creation" in message and info.value.stage == "normalization and conversion"
    assert "nested subgraphs: If 'deep' (Ifs nested 12 deep, 8190 subgraphs)" in message, message
    assert limits.wait_for_abandoned(120)  # the session finishes in the background (and is waited for at exit)


def test_the_nchwc_block_probe_builds_its_session_under_the_time_budget() -> None:
    from onnxxai.convert.contrib_fused import _probe_block_size

    with limits.budget(timeout=0.01, stage="normalization and conversion", label="nchwc.onnx"):
        time.sleep(0.02)
        with pytest.raises(TimeLimitError, match="onnxruntime's session creation"):
            _probe_block_size()


def test_a_timeout_says_where_the_time_went_when_the_stage_stopped_did_not_spend_it() -> None:
    with limits.budget(timeout=0.3, stage="reading the file", label="slow.onnx"):
        time.sleep(0.45)
        with limits.budget(stage="normalization and conversion"), pytest.raises(TimeLimitError) as info:
            limits.check_time("normalization pass 'name_nodes'")
    message = str(info.value)
    assert re.search(r"stopped at normalization pass 'name_nodes'; time spent: reading the file 0\.[4-9] s\)", message), message
    with limits.budget(timeout=0.2, stage="parity probe", label="spin.onnx"):  # the stage stopped spent it: no list
        time.sleep(0.25)
        with pytest.raises(TimeLimitError) as info:
            limits.check_time("Loop node 'spin'")
    assert "time spent" not in str(info.value)


def test_a_timeout_of_load_names_the_files_nested_ifs(tmp_path: Path) -> None:
    path = _nested_ifs_file(tmp_path, 9)
    with pytest.raises(TimeLimitError) as info:  # 1022 subgraphs to convert: seconds
        load(path, timeout=0.5)
    assert "nested subgraphs: If 'deep' (Ifs nested 9 deep, 1022 subgraphs)" in str(info.value)
    limits.wait_for_abandoned(120)


def test_ifs_nested_past_the_subgraph_limit_are_refused_while_reading(tmp_path: Path) -> None:
    path = _nested_ifs_file(tmp_path, 12)
    with pytest.raises(ResourceLimitError, match=rf"{path}: the file holds more than {limits.MAX_SUBGRAPHS} subgraphs") as info:
        load(path, timeout=60)
    assert "If node 'deep'" in str(info.value) and "Ifs nested 12 deep" in str(info.value)
    assert not isinstance(info.value, TimeLimitError)
    assert limits.check_size(onnx.load(str(path)), "deep.onnx", max_subgraphs=2**13) == 2 + 2**13 - 1


def test_nested_budgets_never_extend_the_outer_deadline() -> None:
    with limits.budget(timeout=1.0):
        with limits.budget(timeout=100.0):
            assert limits.remaining() is not None and limits.remaining() <= 1.0
    assert limits.remaining() is None


# -- memory -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ConstantOfShape", "initializer"])
def test_a_constant_of_10_12_elements_is_refused_before_any_allocation(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "huge.onnx"
    onnx.save(fuzz.huge_constant_model(10**12, kind), str(path))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises((MemoryLimitError, ModelFileError)) as info:
        load(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500
    assert isinstance(info.value, MemoryLimitError), info.value
    message = str(info.value)
    assert str(path) in message and "TiB" in message
    assert ("'fill'" in message) if kind == "ConstantOfShape" else ("initializer 'c'" in message)


def test_the_memory_budget_is_configurable(tmp_path: Path) -> None:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Expand", ["one", "shape"], ["c"], name="widen"), helper.make_node("Add", ["x", "c"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2000])],
        [numpy_helper.from_array(np.array([2000], np.int64), "shape"), numpy_helper.from_array(np.ones(1, np.float32), "one")]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "expand.onnx"
    onnx.save(model, str(path))
    assert load(path).parity.ok  # 8 kB: well inside the default budget
    with pytest.raises(MemoryLimitError, match=r"Expand node 'widen'.*7\.81 KiB.*budget of 3.91 KiB"):
        load(path, memory_limit=4000)


def test_folding_refuses_a_shape_that_only_folding_reveals(tmp_path: Path) -> None:
    """ConstantOfShape fed by Concat of constants: the size is known only once Concat is folded."""
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["shape"], axis=0, name="join"),
         helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill"),
         helper.make_node("Add", ["x", "c"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["h", "w"])],
        [numpy_helper.from_array(np.array([10**6], np.int64), "a"), numpy_helper.from_array(np.array([10**6], np.int64), "b")]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(MemoryLimitError, match="ConstantOfShape node 'fill'"):
        load(model)


def test_raw_data_shorter_than_its_dims_is_a_named_error(tmp_path: Path) -> None:
    model = fuzz.huge_constant_model(12, "initializer")  # dims 3x4, 16 bytes of raw data instead of 48
    with pytest.raises(ModelFileError, match=r"initializer 'c' declares dims \[3, 4\].*holds 4"):
        load(model)


def test_element_types_onnx_does_not_define_are_named_errors() -> None:
    model = fuzz.loop_model(trips=3)
    model.graph.input[0].type.tensor_type.elem_type = 999
    with pytest.raises(ModelFileError, match="graph input 'x' has element type 999"):
        load(model)
    model = fuzz.loop_model(trips=3)
    model.graph.initializer[0].data_type = 999
    with pytest.raises(ModelFileError, match="initializer 'M' has element type 999"):
        load(model)


def test_external_data_cannot_leave_the_model_folder(tmp_path: Path) -> None:
    model = fuzz.huge_constant_model(12, "initializer")
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../outside.bin")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 48)
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m" / "model.onnx"))
    with pytest.raises(ExternalDataError, match="escapes the model's folder"):
        load(tmp_path / "m" / "model.onnx")


def test_a_file_of_too_many_nodes_is_refused_while_counting() -> None:
    model = fuzz.huge_constant_model(12, "initializer")
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], name=f"copy{k}") for k in range(1)], "b", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    for _ in range(4):  # both branches hold the level below: 2^5 - 1 nodes per branch
        node = helper.make_node("If", ["cond"], ["t"], then_branch=then, else_branch=then, name="nest")
        then = helper.make_graph([node], "b", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=then, name="top"))
    assert limits.check_size(model, "nested.onnx") == 2 + 2 * (2**5 - 1)  # Add, If, and 31 nodes per branch
    with pytest.raises(ResourceLimitError, match="nested.onnx: the file holds more than 40 nodes"):
        limits.check_size(model, "nested.onnx", max_nodes=40)


# -- images -------------------------------------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height (its pixel data is a stub): what a decompression bomb shows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    return export(net, torch.randn(1, 3, 16, 16), tmp_path_factory.mktemp("cnn") / "cnn.onnx")


def _bad_images(folder: Path) -> dict[str, Path]:
    rgb = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "ok.jpg")
    data = (folder / "ok.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    return {"bomb": _png_header_only(folder / "bomb.png", 16000, 16000), "truncated": folder / "truncated.jpg",
            "empty": folder / "empty.png"}


@pytest.mark.parametrize("case, text", [("bomb", "decompression bomb"), ("truncated", "truncated"), ("empty", "empty file")])
def test_cli_run_gives_one_line_and_exit_2_for_bad_images(image_model: Path, tmp_path: Path, capsys, case: str,
                                                          text: str) -> None:
    image = _bad_images(tmp_path)[case]
    status = main(["run", str(image_model), str(image), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("onnxxai: error: ") and str(image) in err and text in err


def test_a_50_megapixel_photo_passes_the_pixel_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (8660, 5774), 128).save(path, compress_level=1)  # 50.0 megapixels
    assert read_image(path, 1, (8, 8)).shape == (8, 8)
    with pytest.raises(InputError, match="megapixels, over the limit of 40"):
        read_image(path, 1, (8, 8), max_pixels=40_000_000)


def test_image_modes_are_converted_or_refused_with_a_message(tmp_path: Path) -> None:
    gray16 = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png", 1)
    np.testing.assert_allclose(got, gray16 / 257.0)  # 16-bit scaled into [0, 255], precision kept
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg")
    red = read_image(tmp_path / "cmyk.jpg", 3)
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.warns(UserWarning, match="alpha channel is dropped"):
        assert read_image(tmp_path / "alpha.png", 3)[..., 0].max() == 200
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match="32-bit float"):
        read_image(tmp_path / "float.tif", 1)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "text.png", 3)


# -- CLI discipline -----------------------------------------------------------------------------------
def test_cli_timeout_and_usage_errors_are_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spin.onnx"
    onnx.save(fuzz.loop_model(), str(path))
    assert main(["check", str(path), "--timeout", "1"]) == 1  # check reports the error in its report
    out = capsys.readouterr()
    assert "time budget of 1 s" in out.out + out.err
    with pytest.raises(SystemExit) as info:
        main(["check", str(path), "--timeout", "soon"])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- fuzzing ------------------------------------------------------------------------------------------
def test_a_seeded_fuzz_sample_ends_in_parity_or_named_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    seeds = [export(mlp, torch.randn(1, 6), tmp_path / "mlp.onnx"), tmp_path / "loop.onnx"]
    onnx.save(fuzz.loop_model(trips=3, name="three"), str(seeds[1]))
    sample = ["truncate", "byte_flip", "bad_op_type", "drop_initializer", "huge_constant", "loop_2_62", "cycle",
              "nonsense_attribute", "raw_data_short", "external_traversal", "bad_opset", "dtype"]
    records = fuzz.fuzz(seeds, len(sample), seed=0, workdir=tmp_path / "mutants", timeout=3, mutations=sample)
    summary = fuzz.summarize(records)
    bad = [r for r in records if r["outcome"] not in fuzz.GOOD + ("skipped",)]
    assert not bad, bad
    assert summary["mutants"] >= 10


def test_cli_binary_csv_is_a_one_line_input_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81" * 64)
    status = main(["run", "models/lenet5_mnist.onnx", str(path), "--method", "occlusion", "--out", str(tmp_path / "o"),
                   "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "not a UTF-8 CSV" in err


def test_the_command_exits_at_once_when_native_work_was_abandoned(tmp_path):
    """`onnxxai` (cli.console) leaves with main()'s status right after its one line even while a thread a
    time budget abandoned is still busy: not waiting for it (a hang) and not aborting (status 134)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "abandon.py"
    script.write_text(
        "import sys, time\n"
        "from onnxxai import cli\n"
        "from onnxxai.errors import OnnxxaiError\n"
        "from onnxxai.proto import limits\n"
        "def fake_main(argv=None):\n"
        "    try:\n"
        "        with limits.budget(timeout=0.5, stage='a stage'):\n"
        "            limits.call_within_budget(lambda: time.sleep(60), 'native work')\n"
        "    except OnnxxaiError as exc:\n"
        "        print('onnxxai: error:', str(exc).splitlines()[0], file=sys.stderr)\n"
        "        return 2\n"
        "    return 0\n"
        "cli.main = fake_main\n"
        "cli.console()\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - start < 30  # imports included; the abandoned work would take 60 s
    assert done.stderr.count("\n") == 1 and "native work" in done.stderr
