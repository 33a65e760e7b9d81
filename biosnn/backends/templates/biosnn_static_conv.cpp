{# biosnn: propagation of a static convolution (no plasticity, no delay) without
   any per-synapse array.  A spike of input neuron i = (c, y, x) (channel-major,
   as the spec's Conv2D) reaches output neuron j = (o, oy, ox) for every output
   channel o of its group and every kernel tap (ky, kx) with
   oy * sh - ph + ky = y and ox * sw - pw + kx = x inside the output, with the
   weight w[((o * cin_g + c mod cin_g) * kh + ky) * kw + kx] of the shared kernel
   (torch's layout): the synapses of biosnn.connectivity.conv2d, computed instead
   of stored.  Each output neuron gets at most one addition per spiking input,
   in the order of the spike space, so the sums equal the CSR template's.
   USES_VARIABLES { _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import add_statements, spike_loop %}

{% block maincode %}
    {% call spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, _source_spikespace,
                   4) %}
    const int32_t _c = _i / {{conv.H * conv.W}};
    const int32_t _y = (_i / {{conv.W}}) % {{conv.H}};
    const int32_t _x = _i % {{conv.W}};
    const int32_t _g = _c / {{conv.cin_g}};
    const int32_t _cg = _c - _g * {{conv.cin_g}};
    for (int32_t _o = _g * {{conv.cout_g}}; _o < (_g + 1) * {{conv.cout_g}}; _o++)
    {
        for (int32_t _ky = 0; _ky < {{conv.kh}}; _ky++)
        {
            const int32_t _ny = _y + {{conv.ph}} - _ky;
            if (_ny < 0 || _ny % {{conv.sh}} != 0 || _ny / {{conv.sh}} >= {{conv.Ho}})
                continue;
            const int32_t _row = (_o * {{conv.Ho}} + _ny / {{conv.sh}}) * {{conv.Wo}};
            const int32_t _krow = ((_o * {{conv.cin_g}} + _cg) * {{conv.kh}} + _ky) * {{conv.kw}};
            for (int32_t _kx = 0; _kx < {{conv.kw}}; _kx++)
            {
                const int32_t _nx = _x + {{conv.pw}} - _kx;
                if (_nx < 0 || _nx % {{conv.sw}} != 0 || _nx / {{conv.sw}} >= {{conv.Wo}})
                    continue;
                const int32_t _j = _row + _nx / {{conv.sw}};
                {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_krow + _kx')
                   | autoindent }}
            }
        }
    }
    {% endcall %}
{% endblock %}
