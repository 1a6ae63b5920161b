"""The Ray backend (PYGENT_BACKEND=ray, RAY_ADDRESS): sandboxes spread over a Ray cluster.

node.py is the node agent (a Ray actor per node, the only one that talks to the node's
engine); backend.py places sandboxes with Ray's resources; sandbox.py forwards the
Sandbox API to the agent. Imported only when the backend is chosen: `import pygent`
and `pygent-runner exec` never import Ray.
"""
