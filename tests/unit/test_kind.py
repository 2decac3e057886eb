from __future__ import annotations

from pathlib import Path

from rebuild.clusters import kind


def test_kind_config_has_control_plane_and_workers_on_loopback() -> None:
    cfg = kind.kind_config(3, api_port=7443)
    assert cfg["nodes"] == [{"role": "control-plane"}, {"role": "worker"}, {"role": "worker"}]
    assert cfg["networking"] == {"apiServerAddress": "127.0.0.1", "apiServerPort": 7443}


def test_create_argv_is_an_argv_list_with_config_and_kubeconfig() -> None:
    argv = kind.create_argv("/usr/bin/kind", "dr-1", Path("/s/kind.yaml"), Path("/s/kubeconfig"), image="kindest/node:v1.34.0")
    assert argv == [
        "/usr/bin/kind",
        "create",
        "cluster",
        "--name",
        "dr-1",
        "--config",
        "/s/kind.yaml",
        "--kubeconfig",
        "/s/kubeconfig",
        "--wait",
        "120s",
        "--image",
        "kindest/node:v1.34.0",
    ]


def test_delete_and_kubeconfig_argv() -> None:
    assert kind.delete_argv("kind", "x", Path("/k")) == ["kind", "delete", "cluster", "--name", "x", "--kubeconfig", "/k"]
    assert kind.kubeconfig_argv("kind", "x") == ["kind", "get", "kubeconfig", "--name", "x"]
