{# biosnn: propagation of a static convolution (no plasticity, no delay) without
   any per-synapse array.  A spike of input neuron i = (c, y, x) (channel-major,
   as the spec's Conv2D) reaches output neuron j = (o, oy, ox) for every output
   channel o of its group and every kernel tap (ky, kx) with
   oy * sh - ph + ky = y and ox * sw - pw + kx = x inside the output, with the
   weight w[((o * cin_g + c mod cin_g) * kh + ky) * kw + kx] of the shared kernel
   (torch's layout): the synapses of biosnn.connectivity.conv2d, computed instead
   of stored.  With R replicas (conv.R > 1) input i = r * C*H*W + (c, y, x) reaches
   the outputs of replica r only (offset r * O*Ho*Wo), with the same kernel.  Each
   output neuron gets at most one addition per spiking input, in the order of the
   spike space, so the sums equal the CSR template's.  With OpenMP, threads own
   replicas (R > 1) or output channels (R = 1) and take the spikes in order: no
   atomic additions, the same sums as one thread (unless a target variable is shared).
   USES_VARIABLES { _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import conv_decode, conv_taps, load_factors, spike_loop %}

{% block maincode %}
    {% if openmp_pragma('with_openmp') and blocked %}
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    {% if conv.R > 1 %}
    {# threads own replicas: all output channels of their copies #}
    #pragma omp parallel for schedule(static)
    for (int32_t _own_r = 0; _own_r < {{conv.R}}; _own_r++)
    {
        for (int32_t _k = 0; _k < _num_spikes; _k++)
        {
            const int32_t _i = {{_source_spikespace}}[_k];
            if (_i / {{conv.C * conv.H * conv.W}} != _own_r)
                continue;
            {{ conv_decode(conv) | autoindent }}
            {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
            for (int32_t _o = _g * {{conv.cout_g}}; _o < (_g + 1) * {{conv.cout_g}}; _o++)
            {
                {{ conv_taps(conv, statements, variables, get_array_name, openmp_pragma, false) | autoindent }}
            }
        }
    }
    {% else %}
    {# threads own output channels #}
    #pragma omp parallel for schedule(static)
    for (int32_t _o = 0; _o < {{conv.O}}; _o++)
    {
        for (int32_t _k = 0; _k < _num_spikes; _k++)
        {
            const int32_t _i = {{_source_spikespace}}[_k];
            {{ conv_decode(conv) | autoindent }}
            if (_g != _o / {{conv.cout_g}})
                continue;
            {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
            {{ conv_taps(conv, statements, variables, get_array_name, openmp_pragma, false) | autoindent }}
        }
    }
    {% endif %}
    {% else %}
    {% call spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, _source_spikespace,
                   4) %}
    {{ conv_decode(conv) }}
    for (int32_t _o = _g * {{conv.cout_g}}; _o < (_g + 1) * {{conv.cout_g}}; _o++)
    {
        {{ conv_taps(conv, statements, variables, get_array_name, openmp_pragma, true) | autoindent }}
    }
    {% endcall %}
    {% endif %}
{% endblock %}
