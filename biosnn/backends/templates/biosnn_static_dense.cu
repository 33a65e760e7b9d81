{# biosnn: CUDA propagation of a static all-to-all projection (row-major weight matrix, no
   target list): the threads of a block add the row w[i * n_post : (i + 1) * n_post] of a
   spiking neuron i, coalesced.  See biosnn_static_common.cu and biosnn_static_dense.cpp.
   USES_VARIABLES { _source_spikespace } #}
{% extends 'biosnn_static_common.cu' %}
{% from 'biosnn_static_macros.cu' import atomic_add_statements %}

{% block spike_body %}
const size_t _row = (size_t)_i * {{n_post}};
for (int32_t _j = threadIdx.x; _j < {{n_post}}; _j += blockDim.x)
{
    {{ atomic_add_statements(statements, variables, get_array_name, c_data_type, '_row + _j') | autoindent }}
}
{% endblock %}
