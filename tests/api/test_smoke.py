import httpx
import trio

from tests.harness import register, start_instance


async def test_two_instances_share_one_database(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_instance(nursery, database_url)
            b = await start_instance(nursery, database_url)
            async with httpx.AsyncClient() as client:
                user = await register(client, a.url)
                r = await client.post(f"{a.url}/api/todos", json={"title": "x"}, headers=user.headers)
                assert r.status_code == 201
                r = await client.get(f"{b.url}/api/todos", headers=user.headers)
                assert [t["title"] for t in r.json()["items"]] == ["x"]
            a.stop()
            b.stop()
