"""One pyperf microbenchmark: deserialize a message with one codec and read one or all fields.

    python bench.py --codec NAME --payload-bytes N --fields one|all [pyperf options]

pyperf options as for any pyperf.Runner script, e.g. `--processes 2 --values 3 --warmups 1
--min-time 0.05` (loops are calibrated by pyperf unless `--loops` is given). The Runner
spawns its calibration and worker processes with this same script; add_cmdline_args hands
them --codec, --payload-bytes and --fields. Every process builds the same message
(records.make_message), encodes it with the codec once, checks the read works, and times
`read(payload)` in a loop of `loops` calls.

Output: on stdout only, once all workers are done, one json_values line per measured pyperf
value (warm-ups and calibration excluded), seconds per deserialization:

    {"value": 1.23e-06, "units": 131072}

("units": deserializations the value covers). Everything pyperf prints, in this process and
its workers, goes to stderr, and so does one line describing the payload.
"""

import json
import os
import sys
import time

import formats
import pyperf
import records


def _pass_options(cmd: list[str], args) -> None:
    cmd.extend(["--codec", args.codec, "--payload-bytes", str(args.payload_bytes), "--fields", args.fields])


def main() -> int:
    # fd 1 becomes stderr for this process and the workers it spawns (pyperf's result lines,
    # warnings); the json_values lines go to the real stdout, kept as a non-inheritable fd.
    values_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)

    runner = pyperf.Runner(add_cmdline_args=_pass_options)
    runner.argparser.add_argument("--codec", choices=sorted(formats.CODECS), required=True)
    runner.argparser.add_argument("--payload-bytes", type=int, required=True)
    runner.argparser.add_argument("--fields", choices=["one", "all"], required=True)
    args = runner.parse_args()

    message = records.make_message(args.payload_bytes)
    codec = formats.codec(args.codec)
    payload = codec.encode(message)
    read = codec.read_one if args.fields == "one" else codec.read_all
    read(payload)  # fail here, not inside the timing loop

    def time_reads(loops: int) -> float:
        start = time.perf_counter()
        for _ in range(loops):
            read(payload)
        return time.perf_counter() - start

    name = f"{args.codec}-{args.payload_bytes}B-{args.fields}"
    benchmark = runner.bench_time_func(
        name,
        time_reads,
        metadata={
            "payload_json_bytes": len(records.json_bytes(message)),
            "payload_bytes": len(payload),
            "records": len(message["records"]),
        },
    )
    if args.worker:  # pyperf sent this worker's run to the parent through --pipe
        return 0
    print(
        f"{name}: {len(message['records'])} records, {len(payload)} bytes encoded "
        f"({len(records.json_bytes(message))} as JSON)",
        file=sys.stderr,
    )
    with values_out:
        for run in benchmark.get_runs():
            for value in run.values:
                values_out.write(json.dumps({"value": value, "units": run.get_total_loops()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
