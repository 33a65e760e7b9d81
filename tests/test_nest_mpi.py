"""NEST across processes: merging per-rank recorder data, and how Poisson inputs are built on NEST.

The merge functions are tested with synthetic per-rank parts (neurons dealt
round-robin to ranks, as NEST deals them to virtual processes): merged, they
must equal the one-process arrays exactly.  No MPI is needed; the run with
``mpirun -np 2`` is ``benchmarks/nest_mpi_cuba.py`` (it needs an MPI-enabled
NEST, see ``scripts/build_nest_mpi.sh``).
"""

import os
import sys

import numpy as np
import pytest

from biosnn.backends.nest_mpi import (Communicator, communicator, merge_connections, merge_node_values,
                                      merge_samples, merge_spikes, per_node, sample_matrix)
from biosnn.errors import BackendError


def _deal(n_ranks, senders, *arrays, seed=0):
    """Split event arrays by sender round-robin over ranks, each rank's part in shuffled order."""
    rng = np.random.default_rng(seed)
    parts = []
    for r in range(n_ranks):
        sel = np.flatnonzero(senders % n_ranks == r)
        sel = sel[rng.permutation(len(sel))]
        parts.append((senders[sel],) + tuple(a[sel] for a in arrays))
    return parts


def _one_process_spikes(seed=1, n=40, steps=500):
    rng = np.random.default_rng(seed)
    step, sender = np.nonzero(rng.random((steps, n)) < 0.02)
    return (step + 1) * 0.1, sender.astype(np.int64) + 11  # ms (NEST stamps), global ids from 11


@pytest.mark.parametrize("n_ranks", [1, 2, 3])
def test_merged_spike_events_equal_the_one_process_events(n_ranks):
    times, senders = _one_process_spikes()
    parts = [{"times": t, "senders": s} for s, t in _deal(n_ranks, senders, times)]
    t, s = merge_spikes(parts)
    np.testing.assert_array_equal(t, times)  # np.nonzero gives (step, sender) order: time, then sender
    np.testing.assert_array_equal(s, senders)
    assert t.dtype == np.float64 and s.dtype == np.int64


def test_merge_spikes_takes_ranks_without_events_and_rejects_ragged_parts():
    t, s = merge_spikes([{}, {"times": np.array([0.3, 0.2]), "senders": np.array([4, 7])},
                         {"times": np.zeros(0), "senders": np.zeros(0, dtype=np.int64)}])
    np.testing.assert_array_equal(t, [0.2, 0.3])
    np.testing.assert_array_equal(s, [7, 4])
    with pytest.raises(BackendError, match=r"spike events: 2 times but 1 senders"):
        merge_spikes([{"times": [0.1, 0.2], "senders": [3]}])


def test_merged_multimeter_samples_give_the_one_process_matrix():
    """Samples of 5 recorded neurons (one recorded twice) at 30 times, dealt to 2 ranks."""
    rng = np.random.default_rng(2)
    n_t, ids = 30, np.array([3, 5, 6, 8, 9])
    times = np.repeat(np.arange(1, n_t + 1) * 0.1, len(ids))
    senders = np.tile(ids, n_t)
    v, w = rng.normal(size=len(times)), rng.normal(size=len(times))
    parts = [{"times": t, "senders": s, "V_m": a, "w": b} for s, t, a, b in _deal(2, senders, times, v, w)]
    merged = merge_samples(parts, ["V_m", "w"])
    np.testing.assert_array_equal(merged["times"], times)
    np.testing.assert_array_equal(merged["senders"], senders)
    np.testing.assert_array_equal(merged["V_m"], v)
    np.testing.assert_array_equal(merged["w"], w)
    columns = np.array([9, 3, 3, 6])  # monitor indices, in the user's order, with a repeat
    unique_times, matrix = sample_matrix(merged["times"], merged["senders"], merged["V_m"], columns)
    np.testing.assert_array_equal(unique_times, np.arange(1, n_t + 1) * 0.1)
    expected = v.reshape(n_t, len(ids))[:, [4, 0, 0, 2]]
    np.testing.assert_array_equal(matrix, expected)
    _, gaps = sample_matrix(merged["times"], merged["senders"], merged["V_m"], np.array([3, 4]))
    assert np.isnan(gaps[:, 1]).all() and not np.isnan(gaps[:, 0]).any()  # neuron 4 was not sampled
    with pytest.raises(BackendError, match=r"multimeter events: 1 values of 'V_m' for 2 samples"):
        merge_samples([{"times": [0.1, 0.2], "senders": [1, 2], "V_m": [0.5]}], ["V_m"])


def test_node_values_are_put_back_in_population_order():
    ids = np.arange(101, 111)
    values = np.linspace(-70.0, -50.0, 10)
    parts = [(s, v) for s, v in _deal(3, ids, values, seed=4)]
    np.testing.assert_array_equal(merge_node_values(parts, ids), values)
    np.testing.assert_array_equal(merge_node_values(parts, ids[[4, 2]]), values[[4, 2]])
    with pytest.raises(BackendError, match=r"no MPI rank holds nodes \[110\]"):
        merge_node_values(parts[:0] + [(ids[:-1], values[:-1])], ids)
    with pytest.raises(BackendError, match=r"nodes \[101\] were reported by more than one MPI rank"):
        merge_node_values([(ids, values), (ids[:1], values[:1])], ids)
    with pytest.raises(BackendError, match=r"node values: 2 node ids but 1 values"):
        merge_node_values([(ids[:2], values[:1])], ids[:2])
    # setting goes the other way: one dict per node (PyNEST splits a list only when all nodes are local)
    assert per_node("V_m", np.array([-70, -65.5])) == [{"V_m": -70.0}, {"V_m": -65.5}]


def test_connections_of_all_ranks_are_concatenated():
    merged = merge_connections([{"source": [1, 2], "target": [5, 6], "weight": [0.1, 0.2]}, {},
                                {"source": np.array([3]), "target": np.array([5]), "weight": np.array([0.3])}])
    np.testing.assert_array_equal(merged["source"], [1, 2, 3])
    np.testing.assert_array_equal(merged["target"], [5, 6, 5])
    np.testing.assert_array_equal(merged["weight"], [0.1, 0.2, 0.3])
    with pytest.raises(BackendError, match=r"source, target and weight lists differ in length"):
        merge_connections([{"source": [1], "target": [2], "weight": []}])


class _FakeNest:
    def __init__(self, n):
        self.n = n

    def NumProcesses(self):  # noqa: N802 (NEST's name)
        return self.n


def test_one_process_needs_no_mpi_and_several_need_mpi4py(monkeypatch):
    comm = communicator(_FakeNest(1))
    assert (comm.size, comm.rank) == (1, 0)
    assert comm.allgather({"a": 1}) == [{"a": 1}]
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if mpi4py were not installed
    with pytest.raises(BackendError, match=r"NEST runs on 2 MPI processes; gathering the recording needs mpi4py"):
        communicator(_FakeNest(2))


def test_communicator_gathers_in_rank_order():
    class TwoRanks:  # what mpi4py's COMM_WORLD answers on rank 1 of 2
        def Get_size(self):  # noqa: N802
            return 2

        def Get_rank(self):  # noqa: N802
            return 1

        def allgather(self, obj):
            return [{"from": 0}, obj]

    comm = Communicator(TwoRanks())
    assert (comm.size, comm.rank) == (2, 1)
    assert comm.allgather({"from": 1}) == [{"from": 0}, {"from": 1}]


# -- Poisson inputs on NEST (one process, the PyPI wheel) ------------------------------------------
def test_private_slots_make_generator_and_target_name_one_synapse():
    """Which Poisson inputs may skip the parrot relays, and how sources share generators."""
    from biosnn.backends.nest import _private_slots
    from biosnn.spec import model as m
    from biosnn.spec.values import ArrayValue

    def spec_with(connect, monitors=(), size=6, n_post=2):
        return m.NetworkSpec(name="slots", populations=[m.Population("post", n_post, "lif")],
                             inputs=[m.PoissonInput("src", size, rates=ArrayValue(np.full(size, 5.0), "Hz"))],
                             projections=[m.Projection("src_post", "src", "post", "delta_voltage", connect=connect,
                                                       weights="1*mV")],
                             monitors=list(monitors))

    def explicit(i, j):
        return m.Explicit(ArrayValue(np.asarray(i)), ArrayValue(np.asarray(j)))

    rates = np.array([5.0, 5.0, 5.0, 5.0, 7.0, 5.0])
    # sources 0, 1, 2, 5 share rate and target 0 -> slots 0..3; source 4 has its own rate; 3 goes to target 1
    spec = spec_with(explicit([0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 0, 0]))
    np.testing.assert_array_equal(_private_slots(spec, "src", rates, set()), [0, 1, 2, 0, 0, 3])
    unused = spec_with(explicit([4, 1], [0, 0]))  # unconnected sources get slot 0 (they have no connection)
    np.testing.assert_array_equal(_private_slots(unused, "src", rates, set()), [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(_private_slots(spec_with(m.OneToOne(), size=2), "src", rates[:2], set()), [0, 0])
    np.testing.assert_array_equal(_private_slots(spec_with(m.AllToAll(), n_post=1), "src", rates, set()),
                                  [0, 1, 2, 3, 0, 4])
    assert _private_slots(spec, "src", rates, {"src_post"}) is None  # plastic: relays
    assert _private_slots(spec_with(explicit([0, 0], [0, 1])), "src", rates, set()) is None  # one train, 2 synapses
    assert _private_slots(spec_with(m.AllToAll()), "src", rates, set()) is None
    assert _private_slots(spec_with(m.RandomP(0.1)), "src", rates, set()) is None
    monitored = spec_with(explicit([0, 1], [0, 1]), monitors=[m.SpikeMonitor("src")])
    assert _private_slots(monitored, "src", rates, set()) is None


def test_poisson_inputs_private_trains_shared_trains_and_weights():
    """Sources with one synapse each drive NEST straight from shared generators; others keep parrot relays.

    ``priv``: 300 sources, 3 per target neuron, equal rates, distinct weights -> 3 generators, no relays;
    each input spike fires its target (weights above threshold), so counts follow the input rate and the
    final weights read back per synapse equal the spec's.  ``shared``: one source onto two neurons -> a
    relay, and both targets fire at identical times (one train), which direct generators would break.
    """
    pytest.importorskip("nest")
    os.environ.setdefault("PYNEST_QUIET", "1")
    import nest

    from biosnn import get_backend
    from biosnn.spec import model as m
    from biosnn.spec.values import ArrayValue

    def arr(values, unit="1"):
        return ArrayValue(np.asarray(values), unit)

    n, k, rate, duration = 100, 3, 20.0, 2.0
    i = np.arange(n * k)
    weights = 16.0 + (i % 7) * 0.5  # mV: every input spike fires its target (threshold 15 mV above rest)
    lif = {"tau_ref": "0.1*ms"}
    spec = m.NetworkSpec(
        name="poisson_paths", dt="0.1*ms", duration=f"{duration}*second", seed=7,
        populations=[m.Population("post", n, "lif", parameters=lif, initial={"v": "-65*mV"}),
                     m.Population("pair", 2, "lif", parameters=lif, initial={"v": "-65*mV"})],
        inputs=[m.PoissonInput("priv", n * k, rates=arr(np.full(n * k, rate), "Hz")),
                m.PoissonInput("shared", 1, rates=arr([50.0], "Hz"))],
        projections=[m.Projection("priv_post", "priv", "post", "delta_voltage",
                                  connect=m.Explicit(arr(i), arr(i // k)), weights=arr(weights, "mV")),
                     m.Projection("shared_pair", "shared", "pair", "delta_voltage", weights="20*mV")],
        monitors=[m.SpikeMonitor("post"), m.SpikeMonitor("pair")])
    rec = get_backend("nest").build(spec).run(progress=False, final_state=["priv_post.w"])
    assert len(nest.GetNodes({"model": "parrot_neuron"})) == 1  # the shared source's relay only
    assert len(nest.GetNodes({"model": "poisson_generator"})) == k + 1
    expected = n * k * rate * duration
    # input spikes within a 0.1 ms refractory step merge: a relative loss of about rate*k*dt = 0.6 %
    assert abs(len(rec.spikes["post"].times) - expected * (1 - rate * k * 1e-4)) < 4 * np.sqrt(expected)
    np.testing.assert_allclose(rec.final["priv_post.w"].values, weights * 1e-3, rtol=1e-12)
    pair = rec.spikes["pair"]
    a, b = pair.times[pair.indices == 0], pair.times[pair.indices == 1]
    assert len(a) > 50
    np.testing.assert_array_equal(a, b)


def test_nestml_builds_against_a_source_built_nest_only_where_its_headers_are(tmp_path):
    from biosnn.backends.nestml_build import _source_build_prefix
    # the PyPI wheel: a nest-config in the environment's bin (pointing at the wheel's build
    # directory) but no headers: NESTML must use biosnn's stand-in, not that script
    venv = tmp_path / "venv"
    wheel_nest = venv / "lib" / "python3.12" / "site-packages" / "nest"
    wheel_nest.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "nest-config").write_text("#!/bin/sh\n")
    assert _source_build_prefix(wheel_nest) is None
    # a source build (scripts/build_nest_mpi.sh): nest-config and include/nest under the prefix
    (venv / "include" / "nest").mkdir(parents=True)
    assert _source_build_prefix(wheel_nest) == venv
