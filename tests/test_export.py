"""iplap export: the bundle, its manifest, its checks, and the errors of loading a bad one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import light_copy  # noqa: E402
from iplap.cli import main  # noqa: E402
from iplap.errors import BundleError  # noqa: E402
from iplap.runtime.bundle import FORMAT_VERSION, GRAPH_SPECS, MANIFEST, Bundle  # noqa: E402


def test_manifest_records_provenance(bundle_dir, standin_checkpoints):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["precision"] == "fp32"
    assert manifest["opset"] == 17
    assert set(manifest["versions"]) >= {"torch", "onnx", "openvino", "onnxruntime", "iplap"}
    from iplap.provenance import sha256_file
    assert manifest["checkpoints"]["renderer"]["sha256"] == sha256_file(standin_checkpoints["renderer"])
    assert manifest["constants"]["T"] == 5 and manifest["constants"]["Nl"] == 15
    assert manifest["constants"]["mel"]["hop"] == 200
    for spec in GRAPH_SPECS:
        entry = manifest["graphs"][spec.name]
        assert [i["name"] for i in entry["inputs"]] == spec.input_names
        assert entry["onnx"] in manifest["files"] and entry["openvino"] in manifest["files"]
        assert entry["openvino"].replace(".xml", ".bin") in manifest["files"]
        assert max(entry["max_error_vs_torch"].values()) < 6e-5  # about ten times the 5.8e-6 measured


def test_onnx_files_describe_themselves(bundle_dir):
    import onnx

    model = onnx.load(str(bundle_dir / "flow_head.onnx"), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["graph"] == "flow_head" and props["precision"] == "fp32" and "renderer_sha256" in props
    assert model.opset_import[0].version == 17
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic over the N references


def test_openvino_ir_keeps_fp32_weights(bundle_dir):
    import openvino as ov

    model = ov.Core().read_model(str(bundle_dir / "openvino" / "reference_encoder.xml"))
    types = {op.get_output_element_type(0).get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"}
    assert "f16" not in types


def test_tampered_file_is_named(bundle_dir, tmp_path):
    copy = light_copy(bundle_dir, tmp_path / "b")
    target = copy / "reference_encoder.onnx"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.unlink()
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="reference_encoder.onnx has changed"):
        Bundle.load(copy)


def test_missing_file_is_named(bundle_dir, tmp_path):
    copy = light_copy(bundle_dir, tmp_path / "b")
    (copy / "openvino" / "flow_head.bin").unlink()
    with pytest.raises(BundleError, match="openvino/flow_head.bin is missing"):
        Bundle.load(copy)


def test_other_format_version_is_refused(bundle_dir, tmp_path):
    copy = light_copy(bundle_dir, tmp_path / "b")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / MANIFEST).unlink()
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        Bundle.load(copy)


def test_a_bundle_from_before_the_landmark_split_says_to_export_again(bundle_dir, tmp_path, capsys):
    """A format-1 bundle (one landmark_generator graph) is refused by the CLI in one line that
    says how to make a bundle this iplap reads; exit code 2."""
    from iplap.cli import main

    copy = light_copy(bundle_dir, tmp_path / "b")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 1
    (copy / MANIFEST).unlink()
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert main(["bundle", "info", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "format version 1 is not supported" in err
    assert "export it again with `iplap export`" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [None, "{not json", '{"format": "something-else"}'])
def test_not_a_bundle(tmp_path, content):
    (tmp_path / "b").mkdir()
    if content is not None:
        (tmp_path / "b" / MANIFEST).write_text(content)
    with pytest.raises(BundleError):
        Bundle.load(tmp_path / "b")


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "nope")


def _zip_not_torch(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


def _truncated_checkpoint(path, source):
    data = source.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# Files that are not checkpoints, each of which torch.load reports with another exception
# (a text file gave a KeyError traceback from torch's unpickler).
BAD_CHECKPOINTS = {
    "garbage": lambda p, src: p.write_bytes(b"garbage"),
    "text": lambda p, src: p.write_text("renderer weights are on the shared drive\n"),
    "empty": lambda p, src: p.write_bytes(b""),
    "random": lambda p, src: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "zip_not_torch": lambda p, src: _zip_not_torch(p),
    "truncated": _truncated_checkpoint,
    "folder": lambda p, src: p.mkdir(),
}


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_cli_export_with_a_bad_checkpoint_exits_2_and_writes_nothing(tmp_path, capsys, standin_checkpoints, kind):
    bad = tmp_path / "ckpt"
    bad.mkdir()
    shutil.copy(standin_checkpoints["landmark_generator"], bad / "landmarkgenerator_checkpoint.pth")
    BAD_CHECKPOINTS[kind](bad / "renderer_checkpoint.pth", standin_checkpoints["renderer"])
    code = main(["export", "--checkpoint-dir", str(bad), "--out", str(tmp_path / "bundle"), "--no-face-models"])
    err = capsys.readouterr().err
    assert code == 2 and "renderer_checkpoint.pth" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_cli_export_refuses_to_overwrite(tmp_path, capsys, bundle_dir, standin_checkpoints):
    code = main(["export", "--landmark-checkpoint", str(standin_checkpoints["landmark_generator"]),
                 "--renderer-checkpoint", str(standin_checkpoints["renderer"]), "--out", str(bundle_dir),
                 "--no-face-models"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "(use --force)" in err


def test_export_check_catches_a_wrong_graph(standin_checkpoints, tmp_path, monkeypatch):
    """If a converted graph computed something else, export stops and writes nothing."""
    from iplap.export import onnx_export
    from iplap.export.bundle_writer import ExportConfig, export_bundle

    real = onnx_export.reference_outputs

    def skewed(graph, inputs):
        outs = real(graph, inputs)
        return [o + np.float32(0.01) for o in outs] if graph.spec.name == "reference_encoder" else outs

    monkeypatch.setattr(onnx_export, "reference_outputs", skewed)
    monkeypatch.setattr("iplap.export.bundle_writer.build_graphs",
                        lambda lg, r: [g for g in __import__("iplap.export.graphs", fromlist=["x"]).build_graphs(lg, r)
                                       if g.spec.name in ("reference_encoder",)])
    out = tmp_path / "bundle"
    with pytest.raises(onnx_export.ExportCheckError, match="reference_encoder"):
        export_bundle(ExportConfig(standin_checkpoints["landmark_generator"], standin_checkpoints["renderer"], out,
                                   face_models=False))
    assert not out.exists() and not list(tmp_path.iterdir())
