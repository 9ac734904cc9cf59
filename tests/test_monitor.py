"""Monitor files as the old gym Monitor wrote them, confined to the data dir."""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, create, faulty, start_server

pytestmark = pytest.mark.timeout(60)


def run_episodes(client: httpx.Client, iid: str, episodes: int) -> None:
    for _ in range(episodes):
        client.post(f"/v1/envs/{iid}/reset/")
        while not client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["done"]:
            pass


def test_stats_files_are_written_at_episode_end_and_close(client: httpx.Client, server: Server) -> None:
    iid = create(client, "CartPole-v1", kwargs={"max_episode_steps": 4})
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "/tmp/run1", "force": True})
    assert r.status_code == 204 and r.content == b""
    run_episodes(client, iid, 2)
    files = list((server.data_dir / "tmp" / "run1").glob("openaigym.episode_batch.1.*.stats.json"))
    assert len(files) == 1
    stats = json.loads(files[0].read_text())
    assert stats["episode_lengths"] == [4, 4] and stats["episode_rewards"] == [4.0, 4.0]
    assert len(stats["timestamps"]) == 2 and stats["initial_reset_timestamp"] <= stats["timestamps"][0]
    assert client.post(f"/v1/envs/{iid}/monitor/close/").status_code == 204
    client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "/tmp/run1", "resume": True})
    run_episodes(client, iid, 1)
    client.post(f"/v1/envs/{iid}/monitor/close/")
    second = list((server.data_dir / "tmp" / "run1").glob("openaigym.episode_batch.2.*.stats.json"))
    assert len(second) == 1 and json.loads(second[0].read_text())["episode_lengths"] == [4]


def test_used_directory_needs_force_or_resume(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1", kwargs={"max_episode_steps": 2})
    client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "used", "force": True})
    run_episodes(client, iid, 1)
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "used"})
    assert r.status_code == 400 and "force=true" in r.json()["message"]
    assert client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "used", "force": "true"}).status_code == 204


@pytest.mark.parametrize("directory", ["../outside", "/../../etc", "a/../../b"])
def test_directory_that_leaves_the_data_dir_is_400(client: httpx.Client, directory: str) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": directory})
    assert r.status_code == 400 and "leaves the server's data directory" in r.json()["message"]


def test_symlink_out_of_the_data_dir_is_400(client: httpx.Client, server: Server, tmp_path: object) -> None:
    server.data_dir.mkdir(parents=True, exist_ok=True)
    link = server.data_dir / "escape"
    if not link.exists():
        os.symlink("/", link)
    iid = create(client, "CartPole-v1")
    name = f"gym-supervisor-test-{os.getpid()}"
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": f"escape/{name}"})
    assert r.status_code == 400 and "passes through a symbolic link" in r.json()["message"]
    assert not (Path("/") / name).exists()  # nothing was made through it


@pytest.mark.parametrize(("directory", "says"), [("a\u0000b", "NUL"), ("x" * 300, "too long"),
                                               ("/", "the data directory itself"), (".", "the data directory itself"),
                                               ("a/..", "the data directory itself")])
def test_a_directory_the_file_system_refuses_is_400_without_server_paths(
    client: httpx.Client, server: Server, directory: str, says: str
) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": directory})
    assert r.status_code == 400 and says in r.json()["message"], r.text
    assert str(server.data_dir) not in r.text


def test_video_of_every_nth_episode_where_the_env_renders(client: httpx.Client, server: Server) -> None:
    import av

    iid = create(client, faulty("Image"), kwargs={"render_mode": "rgb_array", "max_episode_steps": 3})
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "video", "force": True, "video_callable": 2})
    assert r.status_code == 204, r.text
    run_episodes(client, iid, 3)
    client.post(f"/v1/envs/{iid}/monitor/close/")
    videos = sorted((server.data_dir / "video").glob("openaigym.video.1.*.mp4"))
    assert [v.name.rsplit(".", 2)[-2] for v in videos] == ["video000000", "video000002"]  # episodes 0 and 2
    with av.open(str(videos[0])) as f:
        assert len(list(f.decode(video=0))) == 4  # the reset frame and three steps
    assert json.loads(videos[0].with_suffix(".meta.json").read_text())["episode_id"] == 0
    manifest = json.loads(next((server.data_dir / "video").glob("openaigym.manifest.1.*.manifest.json")).read_text())
    assert [v for v, _ in manifest["videos"]] == [v.name for v in videos]


def test_video_from_an_env_that_does_not_render_is_400(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "novideo", "video_callable": 1})
    assert r.status_code == 400 and "render_mode" in r.json()["message"]


def test_video_without_pyav_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from envproc.video import VideoUnavailable, check_available

    monkeypatch.setitem(sys.modules, "av", None)  # what a server installed without the extra sees
    with pytest.raises(VideoUnavailable, match=r"gym-supervisor\[video\]"):
        check_available()


def test_past_its_cap_the_data_dir_takes_no_new_monitor_and_running_ones_close(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--data-dir-max-mb", "1")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, "CartPole-v1", kwargs={"max_episode_steps": 2})
            assert c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "kept"}).status_code == 204
            assert c.get(f"/v1/envs/{iid}/").json()["monitoring"] is True
            (srv.data_dir / "filler").write_bytes(b"x" * 2 * 2**20)  # the dir now holds 2 MB of its 1

            def until(check: Callable[[], bool]) -> None:
                deadline = time.monotonic() + 30  # the dir is measured every 5 s
                while not check():
                    assert time.monotonic() < deadline
                    time.sleep(0.2)

            until(lambda: c.get(f"/v1/envs/{iid}/").json()["monitoring"] is False)  # closed by the server
            assert list((srv.data_dir / "kept").glob("openaigym.episode_batch.*.stats.json"))  # and flushed
            r = c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "more"})
            assert r.status_code == 507 and "--data-dir-max-mb" in r.json()["message"], r.text
            assert "data_dir_full" in srv.log.read_text()
            (srv.data_dir / "filler").unlink()  # the admin clears it
            until(lambda: c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "more"}).status_code == 204)
    finally:
        srv.stop()
