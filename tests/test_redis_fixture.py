"""The redis fixture gives a real, private, restartable redis-server."""

import redis


def test_real_redis_server_on_a_free_port(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", b"\x00v")
    assert client.get("k") == b"\x00v"
    run_id = client.info("server")["run_id"]
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    assert client.get("k") is None  # persistence is off: a restart comes back empty
    assert client.info("server")["run_id"] != run_id
