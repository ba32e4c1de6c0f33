#!/usr/bin/env python3
"""pyfluss (the official Python client, Rust core) under the same load as
eddy_fluss_bench: same rows, same table shape, same operations.

    pyfluss_bench.py BOOTSTRAP DB.TABLE produce|scan|lookup N [INFLIGHT]

Prints one JSON line: {"op", "rows", "seconds", "bytes"}.
"""
import asyncio
import json
import sys
import time

import os

import fluss

BASE = int(os.environ.get("BENCH_ID_BASE", "0"))


def make_row(i):
    return {"id": i, "user": "user-%d" % (i % 10007), "amount": i * 0.25,
            "ts": 1795300000000 + i, "flag": bool(i & 1),
            "note": "note for row %d of the benchmark" % i}


def row_bytes(r):
    return 8 + len(r["user"]) + 8 + 8 + 1 + len(r["note"])


async def main():
    boot, table, op, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    inflight = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    db, name = table.split(".")
    conn = await fluss.FlussConnection.create(fluss.Config({"bootstrap.servers": boot}))
    path = fluss.TablePath(db, name)
    t = await conn.get_table(path)
    info = await conn.get_admin().get_table_info(path)
    rows = nbytes = found = 0
    if op == "produce":
        import datetime
        tz = datetime.timezone.utc
        w = t.new_append().create_writer()
        t0 = time.perf_counter()
        for i in range(n):
            r = make_row(i)
            nbytes += row_bytes(r)
            r["ts"] = datetime.datetime.fromtimestamp(r["ts"] / 1000, tz)
            w.append(r)
        await w.flush()
        rows = n
    elif op == "scan":
        t0 = time.perf_counter()
        s = await t.new_scan().create_record_batch_log_scanner()
        s.subscribe_buckets({b: fluss.EARLIEST_OFFSET for b in range(info.num_buckets)})
        tab = await s.to_arrow()
        rows = tab.num_rows
        checksum = sum(tab.column("amount").to_pylist()) if rows < 0 else 0  # keep it Arrow-side
        nbytes = (rows * (8 + 8 + 8 + 1) + sum(len(x) for x in tab.column("user").to_pylist())
                  + sum(len(x) for x in tab.column("note").to_pylist())) if rows else 0
        del checksum
    else:
        # one lookuper per in-flight slot: a shared one answers one lookup at a time
        lks = [t.new_lookup().create_lookuper() for _ in range(inflight)]
        t0 = time.perf_counter()
        issued = 0

        async def worker(lk):
            nonlocal issued, rows, found
            while issued < n:
                k = BASE + (issued * 7919) % n
                issued += 1
                r = await lk.lookup({"id": k})
                rows += 1
                found += r is not None
        await asyncio.gather(*[worker(lk) for lk in lks])
    secs = time.perf_counter() - t0
    print(json.dumps({"op": op, "rows": rows, "seconds": round(secs, 4), "bytes": nbytes,
                      "found": found}))
    await conn.close()


asyncio.run(main())
# pyfluss 1.0.0 sometimes aborts while the interpreter finalizes, after the work is done;
# leaving with os._exit skips that teardown (errors above still exit non-zero).
sys.stdout.flush()
os._exit(0)
