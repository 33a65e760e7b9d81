{# biosnn: CUDA propagation of a static convolution without per-synapse arrays (the geometry of
   biosnn_static_conv.cpp, replicas included): the threads of a block take the taps
   t = (o - first output channel of the group, ky, kx) of a spiking input neuron i; taps that
   fall outside the output or between strides add nothing.  See biosnn_static_common.cu.
   USES_VARIABLES { _source_spikespace } #}
{% extends 'biosnn_static_common.cu' %}
{% from 'biosnn_static_macros.cu' import atomic_add_statements %}
{% from 'biosnn_static_macros.cpp' import conv_decode %}

{% block spike_body %}
{{ conv_decode(conv) }}
for (int32_t _t = threadIdx.x; _t < {{conv.cout_g * conv.kh * conv.kw}}; _t += blockDim.x)
{
    const int32_t _o = _g * {{conv.cout_g}} + _t / {{conv.kh * conv.kw}};
    const int32_t _ky = (_t / {{conv.kw}}) % {{conv.kh}};
    const int32_t _kx = _t % {{conv.kw}};
    const int32_t _ny = _y + {{conv.ph}} - _ky;
    const int32_t _nx = _x + {{conv.pw}} - _kx;
    if (_ny < 0 || _ny % {{conv.sh}} != 0 || _ny / {{conv.sh}} >= {{conv.Ho}}
        || _nx < 0 || _nx % {{conv.sw}} != 0 || _nx / {{conv.sw}} >= {{conv.Wo}})
        continue;
    const int32_t _j = ((_r * {{conv.O}} + _o) * {{conv.Ho}} + _ny / {{conv.sh}}) * {{conv.Wo}} + _nx / {{conv.sw}};
    const int32_t _kidx = ((_o * {{conv.cin_g}} + _cg) * {{conv.kh}} + _ky) * {{conv.kw}} + _kx;
    {{ atomic_add_statements(statements, variables, get_array_name, c_data_type, '_kidx') | indent(4) }}
}
{% endblock %}
