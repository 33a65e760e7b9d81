{# biosnn: CUDA propagation of a static projection with per-synapse weights (CSR: the synapses
   of source neuron i are _rowptr[i] .. _rowptr[i+1] of the target list _post), see
   biosnn_static_common.cu and biosnn_static_propagate.cpp.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'biosnn_static_common.cu' %}
{% from 'biosnn_static_macros.cu' import atomic_add_statements %}

{% block spike_body %}
const int32_t _end = {{_rowptr}}[_i + 1];
for (int32_t _s = {{_rowptr}}[_i] + threadIdx.x; _s < _end; _s += blockDim.x)
{
    const int32_t _j = {{_post}}[_s];
    {{ atomic_add_statements(statements, variables, get_array_name, c_data_type, '_s') | autoindent }}
}
{% endblock %}
