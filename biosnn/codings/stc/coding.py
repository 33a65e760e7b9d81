"""STC coding: spatio-temporal conversion blocks with time-decaying thresholds (STCSNN).

Xu et al., "STCSNN: High energy efficiency spike-train level spiking neural
networks with spatio-temporal conversion".  Every ReLU of a network becomes a
spike train encoding block (STEB: IF neurons whose initial potential is the
value to encode, threshold ``theta_t = theta0 exp(-t / tau)``, reset by
subtraction); the next Conv2d/Linear layer is its synapse, and a current
accumulator block (CAB) sums each step's synaptic current weighted by
``theta_t`` into the next block's initial potential.

* :func:`prepare` returns the trainable torch model
  (:class:`~biosnn.codings.stc.torch_model.STCNet`: forward with real spikes,
  backward with the paper's ReLU + conv equivalent gradient);
* :func:`convert` returns an :class:`STCSNN`, the Brian2 network of
  :mod:`biosnn.codings.stc.spec`, whose runs equal the float64 torch
  forward pass (:meth:`STCSNN.reference`).

Paper defaults: ``T = 8``, ``theta0 = 1``, ``tau = 2`` (steps).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from biosnn.conversion.inputs import check_nonnegative
from biosnn.conversion.snn import SNN, SNNResult, _to_numpy
from biosnn.errors import ConversionError

__all__ = ["PARAMS", "DEFAULTS", "prepare", "convert", "STCSNN", "range_scaled_graph"]

PARAMS = ("T", "theta0", "tau", "first_layer", "name")

#: Default parameters (the paper's): 8 steps per block, theta0 = 1, tau = 2 steps, analog first layer.
DEFAULTS = {"T": 8, "theta0": 1.0, "tau": 2.0, "first_layer": "analog"}

_WHY_NONNEGATIVE = ("with first_layer='spiking' encodes each input value as a spike train of a STEB, which "
                    "stays silent for values <= 0 (first_layer='analog' takes signed inputs)")


def prepare(model, *, T: int = 8, theta0: float = 1.0, tau: float = 2.0, first_layer: str = "analog",
            name: str | None = None, calibration=None):
    """The STCSNN torch model to train (``biosnn.prepare(model, "stc", ...)``).

    Parameters
    ----------
    model : torch.nn.Module or STCNet
        A (trained or untrained) ReLU network, an ``nn.Sequential`` or a module
        whose ``forward`` applies its layers one after another (see
        :func:`~biosnn.codings.stc.torch_model.as_sequential`); it is copied.  An STCNet is
        re-built with the new parameters (same weights).
    T : int
        Time steps per block (spike-train length).
    theta0 : float
        Initial threshold (dimensionless potential units).
    tau : float
        Threshold decay time constant, in steps.
    first_layer : {"analog", "spiking"}
        The layers before the first ReLU run on the analog input (default, as
        in the paper) or the input is STEB-encoded as well.
    name : None
        Not used here (it names the converted network: pass it to :func:`convert`).
    calibration : torch.Tensor or ndarray, optional
        ``(N,) + input_shape`` training samples: the weights are rescaled layer by layer
        (:func:`range_scaled_graph`, BatchNorm folded) so that the 99.9th percentile of
        every STEB input is the largest value a train encodes, ``sum(theta)``; the logits
        stay the same.  Without it a trained ANN whose activations exceed ``sum(theta)``
        (about 2.5 for the defaults) loses accuracy (saturated trains).

    Returns
    -------
    biosnn.codings.stc.torch_model.STCNet
        In the training mode of ``model``; forward with STEB + synapse + CAB,
        backward with the ReLU + conv equivalent gradient.
    """
    from biosnn.codings.stc.torch_model import STCNet, as_sequential
    if name is not None:
        raise ConversionError("'name' names the converted network; pass it to biosnn.convert, not to prepare")
    settings = dict(T=T, theta0=theta0, tau=tau, first_layer=first_layer)
    if isinstance(model, STCNet):
        if calibration is not None:
            raise ConversionError("the model is already an STCNet (prepared before); calibration rescales a plain "
                                  "ANN only. Fix: prepare the float model with calibration")
        return model.copy_with(**settings)
    if calibration is not None:
        from biosnn.codings.rate.coding import calibration_array
        from biosnn.codings.stc.torch_model import check_stc_params, graph_to_sequential
        check_stc_params(T, theta0, tau, first_layer)
        x = calibration_array(calibration)
        graph = range_scaled_graph(model, x, x.shape[1:], T=T, theta0=theta0, tau=tau)
        return STCNet(graph_to_sequential(graph).float(), **settings).train(model.training)
    return STCNet(as_sequential(copy.deepcopy(model)), **settings).train(model.training)


def range_scaled_graph(model, calibration, input_shape, *, T: int, theta0: float, tau: float,
                       percentile: float = 99.9):
    """The traced ``model`` with weights rescaled so that STEB inputs fill the encodable range.

    Every layer with a ReLU (a STEB input) is divided by ``lambda_L / sum(theta)``,
    ``lambda_L`` the ``percentile``-th percentile of its positive activations on
    ``calibration`` (:func:`biosnn.conversion.calibrate.activation_scales`); the next
    layer's weights are multiplied by the same factor, so the output layer (scale 1)
    computes the same logits.  The input is not rescaled.

    Returns
    -------
    LayerGraph
    """
    from biosnn.codings.stc.torch_model import check_chain, theta_table
    from biosnn.conversion.calibrate import activation_scales, normalize
    from biosnn.frontends.torch_graph import check_no_ceiling, trace
    graph = trace(model, tuple(input_shape))
    check_chain(graph)
    check_no_ceiling(graph, "stc")
    lam = activation_scales(graph, calibration, percentile=percentile)
    top = float(np.sum(theta_table(T, theta0, tau)))
    scales = {layer.name: (lam[layer.name] / top if layer.relu and layer.op != "input" else 1.0)
              for layer in graph.layers}
    return normalize(graph, scales)


class STCSNN(SNN):
    """An STCSNN in Brian2 (built by ``biosnn.convert(model, "stc", ...)``).

    A sample window lasts :attr:`window_steps` = ``T`` steps per STEB (the
    blocks run one after the other, a pipeline in time; see
    :mod:`biosnn.codings.stc.spec`).  Scores are the output layer's CAB
    value (the logits), not divided by anything.

    Parameters
    ----------
    graph : LayerGraph
        The traced network (BatchNorm folded).
    T, theta0, tau, first_layer
        See :func:`prepare`.
    ann_ops : int
        MACs of one ANN forward pass.
    name : str
        Network name.
    """

    def __init__(self, graph, *, T: int, theta0: float, tau: float, first_layer: str, ann_ops: int,
                 name: str = "stc"):
        from biosnn.codings.stc.spec import stc_plan
        from biosnn.codings.stc.torch_model import check_stc_params
        check_stc_params(T, theta0, tau, first_layer)
        self.theta0, self.tau, self.first_layer = float(theta0), float(tau), first_layer
        self.plan = stc_plan(graph, first_layer)
        self.saturation: dict[str, float] = {}
        self._torch = None
        super().__init__(graph, coding="stc", T=T, thresholds={},
                         input_mode="analog" if first_layer == "analog" else "steb", readout="potential",
                         seed=None, ann_ops=ann_ops, name=name)

    @property
    def settings(self) -> dict:
        """``T``, ``theta0``, ``tau`` and ``first_layer``."""
        return {"T": self.T, "theta0": self.theta0, "tau": self.tau, "first_layer": self.first_layer}

    @property
    def window_steps(self) -> int:
        """Time steps of one sample window: ``T`` per STEB."""
        return self.plan.window_steps(self.T)

    @property
    def cab_macs(self) -> int:
        """Multiply-accumulates of the CABs per sample: one per step for every unit fed by spikes."""
        spiking = set(self.plan.steb_layers)
        return self.T * sum(self.graph[s.layer].size for s in self.plan.stages if s.source in spiking)

    def _build_spec(self, windows: int):
        from biosnn.codings.stc.spec import stc_network_spec
        return stc_network_spec(self.graph, windows=windows, name=self.name, **self.settings)

    def _scores_from_potential(self, v_last: np.ndarray) -> np.ndarray:
        return v_last

    def layer_populations(self) -> dict[str, str]:
        """Torch layer name -> population name (``input``, ``L1``, ... one per stage)."""
        return self.plan.populations

    def torch_model(self):
        """The float64 :class:`~biosnn.codings.stc.torch_model.STCNet` of the converted graph (the exact reference)."""
        if self._torch is None:
            from biosnn.codings.stc.torch_model import STCNet
            self._torch = STCNet.from_graph(self.graph, **self.settings)
        return self._torch

    def reference(self, x, batch_size: int = 500) -> dict:
        """The torch forward pass (float64) of what :meth:`run` simulates.

        Parameters
        ----------
        x : torch.Tensor or ndarray
            ``(N,) + input_shape`` raw inputs.
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        dict
            ``scores`` ``(N, classes)``, ``predictions`` ``(N,)``,
            ``layer_spikes`` (STEB layer name -> ``(N,)`` spike counts, as in
            :attr:`SNNResult.layer_spikes`) and ``saturated`` (layer name ->
            ``(N,)`` fraction of the STEB's inputs above ``sum(theta)``, which
            the train cannot encode).
        """
        import torch
        net = self.torch_model()
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        x = x.reshape((len(x),) + tuple(self.graph.input_shape))
        scores, record = [], {}
        with torch.no_grad():
            for s in range(0, len(x), int(batch_size)):
                scores.append(net(torch.from_numpy(x[s:s + int(batch_size)]), record).numpy())
        layers = self.plan.steb_layers
        n_blocks = len(net.blocks)
        if n_blocks != len(layers):  # pragma: no cover - both come from the same graph
            raise ConversionError(f"internal error: {n_blocks} torch blocks for {len(layers)} STEB populations")

        def per_layer(key):
            chunks = record.get(key, [])
            return {layer: np.concatenate([c.numpy() for c in chunks[k::n_blocks]]) for k, layer in enumerate(layers)}
        scores = np.concatenate(scores).reshape(len(x), -1)
        return {"scores": scores, "predictions": np.argmax(scores, axis=1), "layer_spikes": per_layer("spikes"),
                "saturated": per_layer("saturated")}

    def run(self, x, backend: str = "auto", batch_size: int | None = None, progress: bool = True,
            **backend_options) -> SNNResult:
        """Simulate ``x`` in Brian2 (see :meth:`SNN.run`); ``extras["cab_macs"]`` holds the CABs' MACs per sample.

        With ``first_layer="spiking"`` the inputs must be non-negative (a STEB train cannot encode a
        negative value); an analog first layer takes signed inputs.
        """
        if self.first_layer != "analog":
            check_nonnegative(_to_numpy(x), "STC", _WHY_NONNEGATIVE)
        res = super().run(x, backend=backend, batch_size=batch_size, progress=progress, **backend_options)
        return dataclasses.replace(res, extras={**res.extras, "cab_macs": np.full(len(res.predictions),
                                                                                   float(self.cab_macs))})


def convert(ann, calibration, input_shape, *, T: int | None = None, theta0: float | None = None,
            tau: float | None = None, first_layer: str | None = None, name: str = "stc") -> STCSNN:
    """STC conversion (``biosnn.convert(model, "stc", ...)``).

    Parameters
    ----------
    ann : torch.nn.Module or STCNet
        The model :func:`prepare` returned (after training; its ``T``,
        ``theta0``, ``tau`` and ``first_layer`` are used), or a plain ReLU
        network converted directly (defaults :data:`DEFAULTS`; without an
        explicit ``theta0`` its weights are rescaled from the calibration data,
        :func:`range_scaled_graph`).
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` training samples: used to rescale a plain ANN and
        to measure how often a STEB input exceeds what a train can encode
        (:attr:`STCSNN.saturation`).
    input_shape : tuple
        Per-sample input shape.
    T, theta0, tau, first_layer
        See :func:`prepare`; for an STCNet they must match its own (or be omitted).
    name : str
        Network name.

    Returns
    -------
    STCSNN
    """
    from biosnn.frontends.torch_graph import check_no_ceiling, trace
    from biosnn.codings.rate.coding import calibration_array
    from biosnn.codings.stc.torch_model import STCNet
    from biosnn.metrics import ann_ops
    given = {k: v for k, v in dict(T=T, theta0=theta0, tau=tau, first_layer=first_layer).items() if v is not None}
    if isinstance(ann, STCNet):
        for key, value in given.items():
            if value != ann.settings[key]:
                raise ConversionError(
                    f"the prepared model has {key}={ann.settings[key]!r} but convert was given {key}={value!r}. "
                    f"Fix: omit {key} (or prepare and fine-tune the model with {key}={value!r}).")
        settings, model = ann.settings, ann.ann
        graph = trace(model, input_shape)
    else:
        settings, model = {**DEFAULTS, **given}, ann
        if theta0 is None and len(calibration_array(calibration)):
            graph = range_scaled_graph(model, calibration_array(calibration), input_shape, T=settings["T"],
                                       theta0=settings["theta0"], tau=settings["tau"])
        else:
            graph = trace(model, input_shape)
    check_no_ceiling(graph, "stc")
    snn = STCSNN(graph, **settings, ann_ops=ann_ops(graph), name=name)
    calib = calibration_array(calibration)
    if settings["first_layer"] != "analog":
        check_nonnegative(calib, "STC", _WHY_NONNEGATIVE, "the calibration data")
    if len(calib):
        sat = snn.reference(calib)["saturated"]
        snn.saturation = {layer: float(np.mean(v)) for layer, v in sat.items()}
    return snn
