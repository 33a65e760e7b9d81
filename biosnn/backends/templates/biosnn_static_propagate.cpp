{# biosnn: propagation of a static projection (no plasticity, no delay) in one pass.
   Per spiking presynaptic neuron i, its synapses are the contiguous range
   _rowptr[i] .. _rowptr[i+1] of the target list _post (CSR, sorted by i, then by
   synapse creation order: the same order as Brian2's own Synapses, hence the same
   floating-point sums).  Each statement adds  w * factor  to a post-synaptic
   variable, where w is a per-synapse weight or a shared kernel entry
   w[_kidx[s]], and factor a presynaptic variable or a constant.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import add_statements, load_factors %}

{% block maincode %}
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    {% if openmp_pragma('with_openmp') %}
    #pragma omp parallel for schedule(dynamic, 16)
    {% endif %}
    for (int32_t _k = 0; _k < _num_spikes; _k++)
    {
        const int32_t _i = {{_source_spikespace}}[_k];
        {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
        const int32_t _end = {{_rowptr}}[_i + 1];
        #pragma GCC unroll 8
        for (int32_t _s = {{_rowptr}}[_i]; _s < _end; _s++)
        {
            const int32_t _j = {{_post}}[_s];
            {{ add_statements(statements, variables, get_array_name, openmp_pragma,
                              (_kidx ~ '[_s]') if kernel else '_s') | autoindent }}
        }
    }
{% endblock %}
