"""A scripted model for the demo: no API key, no network, real sandboxes.

It plays a short session: writes a script, runs it, shows that `cd` and files
persist, fans out two sub-agents (each in its own container), collects their
results, and stops. Stateless (it reads the conversation to know where it is),
so the same object can drive the parent and the delegated sub-agents at once.

    pygent-runner run --custom-model examples/demo_model.py:DemoModel "demo"
"""

import json

from pygent import openai_compat

SCRIPT = '''\
import sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
primes = [p for p in range(2, n) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
print(f"primes below {n}: {primes}")
'''


def call(name, **args):
    return openai_compat.ToolCall(
        id=f"call_{name}_{abs(hash(json.dumps(args, sort_keys=True))) % 10**8}",
        type="function",
        function=openai_compat.ToolCallFunction(name=name, arguments=json.dumps(args)),
    )


def say(text=None, *calls):
    return openai_compat.Message(role="assistant", content=text, tool_calls=list(calls) or None)


class DemoModel:
    def chat(self, messages, model, tools):
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        step = sum(1 for m in messages if m["role"] == "assistant")
        if first_user.startswith("SUBTASK"):
            return self.sub(first_user, step)
        return self.parent(messages, step)

    def sub(self, prompt, step):
        n = prompt.split()[-1]
        if step == 0:
            return say(None, call("bash", cmd=f"python3 primes.py {n} | tee result.txt; echo \"computed in container $(hostname)\" >> result.txt"))
        return say(f"Done: primes below {n} are in result.txt.", call("stop"))

    def parent(self, messages, step):
        if step == 0:
            return say("I'll write a small script and run it in my sandbox.", call("write_file", path="primes.py", content=SCRIPT))
        if step == 1:
            return say(None, call("bash", cmd="python3 primes.py 30 && id && uname -sr && ls /var/run/docker.sock 2>&1; echo net: $(ls /sys/class/net)"))
        if step == 2:
            return say("The sandbox keeps my working directory and files between commands:", call("bash", cmd="mkdir -p notes && cd notes && echo persisted > a.txt"), call("bash", cmd="pwd && cat a.txt"))
        if step == 3:
            return say(
                "Now two sub-agents, each in its own fresh container, with a copy of the script.",
                call("delegate_task", prompt="SUBTASK compute primes below 50", files=["primes.py"]),
                call("delegate_task", prompt="SUBTASK compute primes below 100", files=["primes.py"]),
            )
        ids = [m["content"].split()[-1] for m in messages if m["role"] == "tool" and m["content"].startswith("started ")]
        if step == 4:
            return say(None, call("wait_tasks", task_ids=ids, timeout=120))
        if step == 5:
            return say(None, *[call("collect_file", task_id=t, path="result.txt", dest=f"results/{t}.txt") for t in ids])
        if step == 6:
            return say(None, call("bash", cmd="cd /workspace && head -n 5 results/*.txt"))
        return say("All done: every command above ran in a disposable, hardened container.", call("stop"))
