"""The fixture app `python -m localdev.runner --app-dir` imports in the command-line test.

Each message is JSON {"out": <file>, "text": <line>}: the function appends the line to the
file, so the test (another process) can see what ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="runner-cli", connection="AzureWebJobsStorage")
def append_line(msg: func.QueueMessage) -> None:
    data = json.loads(msg.get_body())
    with Path(data["out"]).open("a", encoding="utf-8") as out:
        out.write(f"{data['text']}|{msg.dequeue_count}\n")


@app.timer_trigger(schedule="0 0 * * * *", arg_name="timer", run_on_startup=False)
def hourly(timer: func.TimerRequest) -> None:
    """Not a queue trigger: listed as not driven."""
