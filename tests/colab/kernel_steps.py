"""Run cells one after another in one Jupyter kernel, as a person does in Colab, and report what each did.

Run by tests/test_colab.py with the Python of the simulated Colab runtime:

    python kernel_steps.py steps.json report.json

steps.json is a list of {"code": ..., "before": [[from, to], ...]}: each step first renames the paths given in
"before" (to make a repository vanish and come back), then runs its code. report.json gets, per step,
{"status": "ok" | "error", "ename", "evalue", "stdout", "stderr"}.
"""

import json
import os
import sys

from jupyter_client.manager import start_new_kernel


def run(client, code: str, timeout: float = 900) -> dict:
    msg_id = client.execute(code)
    result = {"status": "ok", "ename": None, "evalue": None, "stdout": "", "stderr": ""}
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            result[content["name"]] += content["text"]
        elif kind == "error":
            result.update(status="error", ename=content["ename"], evalue=content["evalue"])
        elif kind == "status" and content["execution_state"] == "idle":
            return result


def main(steps_file: str, report_file: str) -> None:
    steps = json.loads(open(steps_file).read())
    manager, client = start_new_kernel(kernel_name="python3")
    report = []
    try:
        for step in steps:
            for source, target in step.get("before", []):
                os.rename(source, target)
            report.append(run(client, step["code"]))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        with open(report_file, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
