"""Server-side model code is refused unless the operator allows it."""

from __future__ import annotations

import pytest

from ptq_core.errors import ConfigError
from ptq_core.serving import check_factory_allowed, is_factory


@pytest.fixture
def factory_file(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "net.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    return folder


def test_a_server_side_factory_path_is_refused_unless_its_folder_is_allowed(factory_file, tmp_path, monkeypatch):
    name = f"{factory_file / 'net.py'}:build"
    monkeypatch.delenv("PTQ_ALLOWED_MODEL_DIRS", raising=False)
    with pytest.raises(ConfigError, match="PTQ_ALLOWED_MODEL_DIRS"):
        check_factory_allowed(name)
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="not in an allowed folder"):
        check_factory_allowed(name)
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", f"{tmp_path / 'elsewhere'}:{factory_file}")
    check_factory_allowed(name)  # allowed now
    check_factory_allowed("fmnist-resnet20")  # names that run no file always pass


def test_dot_dot_and_symlinks_do_not_escape_an_allowed_folder(factory_file, tmp_path, monkeypatch):
    outside = tmp_path / "evil.py"
    outside.write_text("raise SystemExit\n")
    (factory_file / "link.py").symlink_to(outside)
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(factory_file))
    for name in (f"{factory_file}/../evil.py:build", f"{factory_file / 'link.py'}:build"):
        with pytest.raises(ConfigError):
            check_factory_allowed(name)


def test_uploaded_code_runs_only_when_the_operator_allows_it(factory_file, monkeypatch):
    name = f"{factory_file / 'net.py'}:build"
    monkeypatch.delenv("PTQ_ALLOWED_MODEL_DIRS", raising=False)
    monkeypatch.delenv("PTQ_ALLOW_UPLOADED_CODE", raising=False)
    with pytest.raises(ConfigError, match="PTQ_ALLOW_UPLOADED_CODE"):
        check_factory_allowed(name, upload_dirs=[factory_file])
    monkeypatch.setenv("PTQ_ALLOW_UPLOADED_CODE", "1")
    check_factory_allowed(name, upload_dirs=[factory_file])
    assert is_factory(name) and not is_factory("resnet18")
