"""One :class:`~biosnn.recording.Recording` from a NEST run spread over MPI processes.

With MPI, NEST distributes the neurons of every population round-robin over
its *virtual processes* (MPI ranks x threads).  A rank holds only its own
neurons, the connections that end on them, and the events its recorders saw
from them: ``spike_recorder`` and ``multimeter`` events, node parameters and
``GetConnections`` all return the rank's part.  This module puts the parts
together so that every rank returns the recording a single process would.

Two layers:

* pure functions (:func:`merge_spikes`, :func:`merge_samples`,
  :func:`merge_node_values`, :func:`merge_connections`, :func:`sample_matrix`)
  that merge per-rank arrays into the one-process layout; they need neither
  NEST nor MPI and are unit-tested with synthetic parts;
* a thin :class:`Communicator` (``allgather``) over ``mpi4py.MPI.COMM_WORLD``
  when NEST reports more than one process, and the identity when it reports
  one (then nothing is imported and nothing is communicated), plus
  ``gather_*`` helpers that read a rank's part from NEST and gather it.

Every ``gather_*`` call is collective: all ranks must call it, in the same
order (the NEST backend reads recorders and final values in spec order on
every rank).  NEST's guarantee is per number of virtual processes: two ranks
of one thread reproduce one process of two threads exactly, not one process of
one thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from biosnn.errors import BackendError

__all__ = ["per_node", "Communicator", "communicator", "merge_spikes", "merge_samples", "merge_node_values",
           "merge_connections", "sample_matrix", "gather_events", "gather_node_values",
           "gather_connections"]


# -- pure merging ---------------------------------------------------------
def _concat(parts: Sequence[dict], key: str, dtype) -> np.ndarray:
    arrays = [np.asarray(p.get(key, ()), dtype=dtype).reshape(-1) for p in parts]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)


def merge_spikes(parts: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Spike events of all ranks, sorted by time, then sender.

    Parameters
    ----------
    parts : sequence of dict
        One ``spike_recorder`` event dict per rank, with ``"times"`` (ms) and
        ``"senders"`` (NEST global ids); a rank without events may give empty
        arrays or omit the keys.

    Returns
    -------
    times : ndarray of float64
        Spike times in ms, as NEST stamped them.
    senders : ndarray of int64
        Global ids of the spiking neurons.
    """
    times, senders = _concat(parts, "times", np.float64), _concat(parts, "senders", np.int64)
    if len(times) != len(senders):
        raise BackendError(f"spike events: {len(times)} times but {len(senders)} senders")
    order = np.lexsort((senders, times))
    return times[order], senders[order]


def merge_samples(parts: Sequence[dict], variables: Sequence[str]) -> dict[str, np.ndarray]:
    """Multimeter samples of all ranks, sorted by time, then sender.

    Parameters
    ----------
    parts : sequence of dict
        One ``multimeter`` event dict per rank: ``"times"`` (ms), ``"senders"``
        and one array per recorded NEST variable, all of equal length.
    variables : sequence of str
        The NEST variable names to merge.

    Returns
    -------
    dict
        ``"times"`` (float64, ms), ``"senders"`` (int64) and each variable
        (float64, NEST units), one entry per sample.
    """
    out = {"times": _concat(parts, "times", np.float64), "senders": _concat(parts, "senders", np.int64)}
    for var in variables:
        out[var] = _concat(parts, var, np.float64)
        if len(out[var]) != len(out["times"]):
            raise BackendError(f"multimeter events: {len(out[var])} values of '{var}' for "
                               f"{len(out['times'])} samples")
    order = np.lexsort((out["senders"], out["times"]))
    return {key: value[order] for key, value in out.items()}


def sample_matrix(times: np.ndarray, senders: np.ndarray, values: np.ndarray,
                  indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``(time, sender, value)`` as a ``(time, recorded index)`` matrix.

    Parameters
    ----------
    times : ndarray
        Sample times (any unit), one per sample.
    senders : ndarray of int
        Neuron index (within its population) of each sample.
    values : ndarray
        The sampled values.
    indices : ndarray of int
        The recorded neuron indices, in column order (may repeat an index).

    Returns
    -------
    unique_times : ndarray
        The distinct sample times, ascending (the matrix rows).
    matrix : ndarray of float64, shape (len(unique_times), len(indices))
        ``matrix[r, c]`` is the value of neuron ``indices[c]`` at
        ``unique_times[r]``; NaN where no sample exists.
    """
    unique_times = np.unique(times)
    row = np.searchsorted(unique_times, times)
    matrix = np.full((len(unique_times), len(indices)), np.nan)
    for c, k in enumerate(np.asarray(indices)):
        sel = senders == k
        matrix[row[sel], c] = values[sel]
    return unique_times, matrix


def merge_node_values(parts: Sequence[tuple[np.ndarray, np.ndarray]], ids: np.ndarray) -> np.ndarray:
    """Per-node values held by different ranks, in the order of ``ids``.

    Parameters
    ----------
    parts : sequence of (ids, values)
        For each rank, the global ids of its local nodes and their values.
    ids : ndarray of int
        Global ids of the whole node collection, in population order.

    Returns
    -------
    ndarray of float64
        The value of each node in ``ids``.

    Raises
    ------
    BackendError
        When a node is held by no rank, or by more than one.
    """
    ids = np.asarray(ids, dtype=np.int64)
    got = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(p[0], dtype=np.int64).reshape(-1) for p in parts])
    vals = np.concatenate([np.zeros(0)] + [np.asarray(p[1], dtype=np.float64).reshape(-1) for p in parts])
    if len(got) != len(vals):
        raise BackendError(f"node values: {len(got)} node ids but {len(vals)} values")
    uniq, counts = np.unique(got, return_counts=True)
    if np.any(counts > 1):
        raise BackendError(f"node values: nodes {uniq[counts > 1][:5].tolist()} were reported by more "
                           "than one MPI rank")
    missing = np.setdiff1d(ids, got)
    if missing.size:
        raise BackendError(f"node values: no MPI rank holds nodes {missing[:5].tolist()}")
    order = np.argsort(got)
    pos = np.searchsorted(got[order], ids)
    return vals[order][pos]


def merge_connections(parts: Sequence[dict]) -> dict[str, np.ndarray]:
    """Connection lists (``source``, ``target``, ``weight``) of all ranks, concatenated in rank order.

    Parameters
    ----------
    parts : sequence of dict
        For each rank, ``GetConnections(...).get(["source", "target", "weight"])``
        as arrays (a rank without connections may give empty arrays).

    Returns
    -------
    dict
        ``"source"``, ``"target"`` (int64 global ids) and ``"weight"`` (float64).
        Callers sort them (the NEST backend sorts by source, then target, as
        on one process).
    """
    out = {"source": _concat(parts, "source", np.int64), "target": _concat(parts, "target", np.int64),
           "weight": _concat(parts, "weight", np.float64)}
    if not len(out["source"]) == len(out["target"]) == len(out["weight"]):
        raise BackendError("connections: source, target and weight lists differ in length")
    return out


def per_node(name: str, values) -> list[dict]:
    """The ``NodeCollection.set`` argument that gives each node its own value, on any number of ranks.

    PyNEST splits ``{name: [v0, v1, ...]}`` into one value per node only when
    all nodes are local (one process); with MPI it passes the list on and NEST
    refuses it ("Failed to cast ... to type double").  A list of one dict per
    node works in both cases (each rank sets its local nodes).

    Parameters
    ----------
    name : str
        NEST parameter or state name.
    values : sequence of float
        One value per node, in the collection's order.
    """
    return [{name: float(v)} for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# -- communication -------------------------------------------------------
class Communicator:
    """``allgather`` over the MPI ranks NEST runs on, or the identity for one process.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator; ``None`` for a single process.
    """

    def __init__(self, comm=None):
        self._comm = comm
        self.size = 1 if comm is None else int(comm.Get_size())
        self.rank = 0 if comm is None else int(comm.Get_rank())

    def allgather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj] if self._comm is None else self._comm.allgather(obj)


def communicator(nest) -> Communicator:
    """The communicator matching NEST's processes (mpi4py only when there is more than one).

    Raises
    ------
    BackendError
        NEST runs on several processes but mpi4py is missing or sees another
        number of processes.
    """
    n = int(nest.NumProcesses())
    if n == 1:
        return Communicator()
    try:
        from mpi4py import MPI
    except ImportError:
        raise BackendError(f"NEST runs on {n} MPI processes; gathering the recording needs mpi4py built "
                           "against the same MPI (scripts/build_nest_mpi.sh installs it next to NEST)") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != n:
        raise BackendError(f"NEST runs on {n} MPI processes but mpi4py's COMM_WORLD has "
                           f"{comm.Get_size()}: use an mpi4py built against NEST's MPI library")
    return Communicator(comm)


def gather_events(comm: Communicator, recorder, keys: Sequence[str]) -> list[dict]:
    """Every rank's events of a recorder (collective): one dict of arrays per rank."""
    events = recorder.get("events")
    local = {k: np.asarray(events.get(k, ())) for k in keys}
    return comm.allgather(local)


def gather_node_values(comm: Communicator, nest, nodes, name: str) -> np.ndarray:
    """A NEST parameter or state of every node in ``nodes``, in population order (collective)."""
    with warnings.catch_warnings():  # reading only the local nodes is the point here
        warnings.simplefilter("ignore", UserWarning)
        if len(nodes) == 1:  # GetLocalNodeCollection indexes a one-node collection with a bool and fails
            local = nodes if bool(nodes.local) else nest.NodeCollection([])
        else:
            local = nest.GetLocalNodeCollection(nodes)
    if len(local):
        part = (np.asarray(local.tolist(), dtype=np.int64),
                np.asarray(local.get(name), dtype=np.float64).reshape(-1))
    else:
        part = (np.zeros(0, np.int64), np.zeros(0))
    return merge_node_values(comm.allgather(part), np.asarray(nodes.tolist(), dtype=np.int64))


def gather_connections(comm: Communicator, conns) -> dict[str, np.ndarray]:
    """Source, target and weight of every connection in ``conns`` on every rank (collective)."""
    if len(conns):
        status = conns.get(["source", "target", "weight"])
        part = {k: np.asarray(status[k]).reshape(-1) for k in ("source", "target", "weight")}
    else:
        part = {}
    return merge_connections(comm.allgather(part))
