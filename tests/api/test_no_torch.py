"""The API process never imports torch: it builds the app, answers reads and schedules a job (the path that
looks runs up in the catalogue), reads stored analyses and schedules one, reads edits and schedules one, with
torch absent from sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from api.app import create_app
from atlas.spec.config import Settings
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.db.store import import_relations

settings = Settings(database_url=sys.argv[1], api_token="t")
sent = []
app = create_app(settings, sender=lambda job_id, queue: sent.append(job_id) or "task")
corpus = load_corpus(bundled_corpus_path())
import_relations(app.state.engine, corpus.values())
from atlas.db.analyses import store_analysis
from atlas.db.store import ModelInfo
toy = ModelInfo("toy", "LlamaForCausalLM", 2, 4, 64, "float32", "a" * 64)
store_analysis(app.state.engine, "icl", toy, corpus["country_capital_city"], {"k": 2}, {"prob_original": 0.5})
client = TestClient(app)
statuses = [
    client.get("/openapi.json").status_code,
    client.get("/circuits").status_code,
    client.get("/relations").status_code,
    client.get("/analyses").status_code,
    client.get("/analyses/1").status_code,
    client.get("/relations/country_capital_city/analyses").status_code,
    client.post(
        "/jobs",
        json={"model": "tiny-llama", "relations": ["country_capital_city"], "method": "eap"},
        headers={"Authorization": "Bearer t"},
    ).status_code,
    client.get("/edits").status_code,
    client.get("/edits/components").status_code,
    client.get("/edits/summary").status_code,
    client.get("/edits/1").status_code,
    client.post(
        "/edits",
        json={"model": "tiny-llama", "relation": "country_capital_city", "subject": "France",
              "new_object": "Berlin", "layer": 1},
        headers={"Authorization": "Bearer t"},
    ).status_code,
    client.post(
        "/analyses",
        json={"kind": "hallucination", "model": "tiny-llama", "relation": "country_capital_city",
              "params": {"max_checked": 8}},
        headers={"Authorization": "Bearer t"},
    ).status_code,
]
heavy = sorted(m for m in ("torch", "transformers", "transformer_lens") if m in sys.modules)
print(json.dumps({"statuses": statuses, "sent": sent, "torch": "torch" in sys.modules, "heavy": heavy}))
"""


def test_the_api_never_imports_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [200, 200, 200, 200, 200, 200, 201, 200, 200, 200, 404, 201, 201]
    assert result["sent"] == [1, 2, 3]
    assert result["heavy"] == [] and result["torch"] is False
