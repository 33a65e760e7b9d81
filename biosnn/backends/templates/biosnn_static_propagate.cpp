{# biosnn: propagation of a static projection (no plasticity, no delay) in one pass.
   Per spiking presynaptic neuron i, its synapses are the contiguous range
   _rowptr[i] .. _rowptr[i+1] of the target list _post (CSR, sorted by i, then by
   synapse creation order: the same order as Brian2's own Synapses, hence the same
   floating-point sums).  Each statement adds  w * factor  to a post-synaptic
   variable, where w is a per-synapse weight or a shared kernel entry
   w[_kidx[s]], and factor a presynaptic variable or a constant.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import add_statements, spike_loop %}

{% block maincode %}
    {% call spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, _source_spikespace,
                   16) %}
    const int32_t _end = {{_rowptr}}[_i + 1];
    #pragma GCC unroll 8
    for (int32_t _s = {{_rowptr}}[_i]; _s < _end; _s++)
    {
        const int32_t _j = {{_post}}[_s];
        {{ add_statements(statements, variables, get_array_name, openmp_pragma,
                          (_kidx ~ '[_s]') if kernel else '_s') | autoindent }}
    }
    {% endcall %}
{% endblock %}
