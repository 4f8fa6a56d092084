"""EAP / EAP-IG scores: the hook mapping, agreement with transformer_lens, batching, and IG vs patching."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of, writer_outputs
from atlas.core.graph import Graph
from atlas.core.hooks import LOGITS_IN_HOOK
from atlas.core.intervention import patched_logits
from atlas.core.metrics import get_metric, object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch, make_batches
from atlas.core.readout import readout_batch, readout_logits
from tests.conftest import batches_for
from tests.unit import reference_patching as ref


def test_logits_input_is_the_sum_of_all_writers(tiny_llama: LoadedModel, relations) -> None:
    """The residual stream decomposes exactly into the graph's writers (Llama has no biases)."""
    batch = batches_for(tiny_llama, relations["country_capital_city"], 4)[0]
    graph = graph_of(tiny_llama)
    acts = writer_outputs(tiny_llama, graph, batch.clean)
    seen: list[torch.Tensor] = []
    tiny_llama.bridge.run_with_hooks(
        batch.clean, fwd_hooks=[(LOGITS_IN_HOOK, lambda t, hook: seen.append(t))]
    )
    torch.testing.assert_close(acts.sum(1), seen[0], atol=1e-5, rtol=1e-5)


def _tl_reference(model: LoadedModel, batch: Batch, graph: Graph) -> torch.Tensor:
    """transformer_lens's own edge attribution, summed over positions, on our [writers, readers] grid.

    It takes gradients on its "corrupted" run, so it gets our corrupt prompts as "clean" and our clean
    prompts as "corrupted"; with the metric as is its scores then equal (corrupt - clean) . grad_clean."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    def writer(node) -> int:
        if node.kind == "embed":
            return 0
        return (
            graph.head_writer(node.layer, node.head)
            if node.kind == "attn_head_out"
            else graph.mlp_writer(node.layer)
        )

    def reader(node) -> int:
        if node.kind == "logits":
            return graph.logits_reader
        if node.kind == "mlp_in":
            return graph.mlp_reader(node.layer)
        return graph.qkv_reader(node.layer, "qkv".index(node.kind[0]), node.head)

    total: dict[tuple[int, int], float] = defaultdict(float)
    for p in model.hf_model.parameters():
        p.requires_grad_(True)  # the reference differentiates through parameters
    try:
        for pair in batch.pairs:
            single = make_batches([pair], 1, pad_id=0)[0]

            def metric(logits: torch.Tensor, single: Batch = single) -> torch.Tensor:
                return object_logprob(logits if logits.dim() == 3 else logits[None], single).sum()

            config = EdgeAttributionConfig(granularity="edge")
            result = attribution_patch(model.bridge, single.corrupt, single.clean, metric, config)
            for (w, r), value in result.edge_scores.items():
                total[writer(w), reader(r)] += value / batch.size
    finally:
        for p in model.hf_model.parameters():
            p.requires_grad_(False)
    reference = torch.zeros(graph.n_writers, graph.n_readers)
    for (w, r), value in total.items():
        reference[w, r] = value
    return reference


def _assert_matches_reference(model: LoadedModel, batch: Batch) -> None:
    graph = graph_of(model)
    ours = edge_scores(model, [batch], object_logprob, method="eap")
    reference = _tl_reference(model, batch, graph)
    scale = ours.abs().max()
    assert scale > 0
    relative = ((ours - reference).abs().max() / scale).item()
    assert relative < 1e-4, f"max relative difference {relative:.2e}"


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_eap_equals_transformer_lens_attribution_patch_on_tiny_models(name: str, request, relations) -> None:
    model = request.getfixturevalue(name)
    _assert_matches_reference(model, batches_for(model, relations["country_capital_city"], 3)[0])


@pytest.mark.slow
def test_eap_equals_transformer_lens_attribution_patch_on_smollm2(smollm2: LoadedModel, relations) -> None:
    _assert_matches_reference(smollm2, batches_for(smollm2, relations["country_language"], 1)[0])


def test_padding_and_batching_do_not_change_scores(tiny_llama: LoadedModel, relations) -> None:
    """Facts of different lengths in one padded batch score as they do one by one."""
    batches = batches_for(tiny_llama, relations["city_in_country"], 6, batch_size=6)
    assert batches[0].position_mask().logical_not().any(), "the batch should hold padding"
    together = edge_scores(tiny_llama, batches, object_logprob, method="eap-ig", steps=3)
    single = [make_batches([p], 1, pad_id=0)[0] for p in batches[0].pairs]
    apart = edge_scores(tiny_llama, single, object_logprob, method="eap-ig", steps=3)
    torch.testing.assert_close(together, apart, atol=1e-6, rtol=1e-4)


def test_eap_ig_with_one_step_is_eap(tiny_gpt2: LoadedModel, relations) -> None:
    batches = batches_for(tiny_gpt2, relations["country_capital_city"], 4)
    eap = edge_scores(tiny_gpt2, batches, object_logprob, method="eap")
    ig1 = edge_scores(tiny_gpt2, batches, object_logprob, method="eap-ig", steps=1)
    ig5 = edge_scores(tiny_gpt2, batches, object_logprob, method="eap-ig", steps=5)
    torch.testing.assert_close(eap, ig1)
    assert not torch.allclose(eap, ig5)


def test_scores_are_zero_where_no_edge_exists(tiny_llama: LoadedModel, relations) -> None:
    scores = edge_scores(
        tiny_llama, batches_for(tiny_llama, relations["country_capital_city"], 2), object_logprob
    )
    graph = graph_of(tiny_llama)
    assert (scores[~graph.valid_edges] == 0).all()
    # Exactly zero only where no position has both a nonzero difference and a gradient: the corrupt prompt
    # differs from the clean one in the subject only, and the last layer's queries, its MLP and the logits
    # matter at the predicting positions alone, where the input embeddings are the same (6 of 262 edges).
    last = tiny_llama.n_layers - 1
    structural = {f"input->a{last}.h{h}<q>" for h in range(tiny_llama.n_heads)} | {
        f"input->m{last}",
        "input->logits",
    }
    zero = {graph.edge_name(w, r) for w, r in ((scores == 0) & graph.valid_edges).nonzero().tolist()}
    assert zero == structural


def test_eap_ig_tracks_exact_edge_patching(tiny_llama: LoadedModel, relations) -> None:
    """Brute force: the metric change when each edge alone carries its corrupt value. EAP-IG with many
    steps should track it closely; its correlation with the exact effects is printed for the record."""
    batch = batches_for(tiny_llama, relations["country_capital_city"], 4)[0]
    graph = graph_of(tiny_llama)
    corrupt = writer_outputs(tiny_llama, graph, batch.corrupt)
    with torch.no_grad():
        base = object_logprob(readout_logits(tiny_llama, batch.clean, batch), readout_batch(batch)).mean()
    edges = graph.valid_edges.nonzero().tolist()
    exact = torch.zeros(len(edges))
    for start in range(0, len(edges), 16):  # 16 circuits to a forward pass, each without one edge
        chunk = edges[start : start + 16]
        keeps = graph.valid_edges.repeat(len(chunk), 1, 1)
        for i, (w, r) in enumerate(chunk):
            keeps[i, w, r] = False
        logits = patched_logits(tiny_llama, graph, batch, corrupt, keeps, "edge")
        metric = object_logprob(logits, readout_batch(batch, len(chunk))).view(len(chunk), -1).mean(1)
        exact[start : start + len(chunk)] = metric - base
    results = {}
    for method, steps in (("eap", 1), ("eap-ig", 20)):
        scores = edge_scores(tiny_llama, [batch], object_logprob, method=method, steps=steps)  # type: ignore[arg-type]
        estimate = torch.tensor([scores[w, r].item() for w, r in edges])
        results[method] = torch.corrcoef(torch.stack([estimate, exact]))[0, 1].item()
    print(f"\ncorrelation with exact single-edge patching over {len(edges)} edges: {results}")
    # Observed here (tiny-llama, 4 facts, 262 edges): eap-ig 0.9988, eap 0.6848.
    assert results["eap-ig"] > 0.998
    assert 0.68 < results["eap"] < results["eap-ig"] - 0.3


@pytest.mark.parametrize(
    ("name", "level", "ablation", "metric", "steps"),
    [
        ("tiny_llama", "edge", "corrupt", "logprob", 5),
        ("tiny_gpt2", "edge", "mean", "logit-diff", 3),
        ("tiny_llama", "node", "corrupt", "logprob", 5),
        ("tiny_gpt2", "node", "zero", "logprob", 2),
    ],
)
def test_eap_ig_scores_equal_integrated_gradients_by_hand(
    name: str, level: str, ablation: str, metric: str, steps: int, request, relations
) -> None:
    """The values, not only their ranking: EAP-IG against integrated gradients written out with hooks in
    tests/unit/reference_patching.py (each fact alone and unpadded; here in padded batches of two lengths)."""
    model = request.getfixturevalue(name)
    batches = batches_for(model, relations["city_in_country"], 6, batch_size=4)
    assert batches[0].position_mask().logical_not().any(), "the batch should hold padding"
    graph = graph_of(model)
    ours = edge_scores(
        model,
        batches,
        get_metric(metric),
        method="eap-ig",
        steps=steps,
        ablation=ablation,
        level=level,  # type: ignore[arg-type]
    )
    by_hand = ref.integrated_gradient_scores(
        model, [b.pairs for b in batches], steps, metric, ablation, level
    )
    reference = torch.zeros_like(ours)
    for key, value in by_hand.items():
        if level == "edge":
            reference[graph.writer_names.index(key[0]), graph.reader_names.index(key[1])] = value
        else:
            reference[graph.writer_names.index(key)] = value
    scale = reference.abs().max().item()
    assert scale > 0
    worst = (ours - reference).abs().max().item()
    print(f"\n{name} {level} {ablation} {metric} steps={steps}: max |difference| {worst:.2e} of {scale:.2e}")
    assert worst <= 1e-4 * scale


def test_no_facts_score_zero_not_nan(tiny_gpt2: LoadedModel) -> None:
    graph = graph_of(tiny_gpt2)
    edges = edge_scores(tiny_gpt2, [], object_logprob)
    nodes = edge_scores(tiny_gpt2, [], object_logprob, level="node")
    assert edges.shape == (graph.n_writers, graph.n_readers) and nodes.shape == (graph.n_writers,)
    assert not edges.any() and not nodes.any()
