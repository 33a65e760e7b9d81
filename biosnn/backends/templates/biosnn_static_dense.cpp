{# biosnn: propagation of a static all-to-all projection without a target list.
   Synapse (i, j) is entry i * n_post + j of w (the order of the spec's synapses), so a
   spike of i adds the contiguous row w[i * n_post : (i + 1) * n_post] to the targets
   0 .. n_post - 1: a loop the compiler vectorises.  Each target gets one addition per
   spiking source neuron, in the order of the spike space, as with Brian2's Synapses.  With
   OpenMP, threads share blocks of targets (no atomic additions) unless a target variable is
   shared (one value for the group).
   USES_VARIABLES { _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import add_statements, load_factors, spike_loop, target_blocks %}

{% block maincode %}
    {% set PREFETCH_SPIKES = 4 %}
    {% if openmp_pragma('with_openmp') and blocked %}
    {% call target_blocks(_source_spikespace, n_post, 512) %}
    {{ load_factors(statements, variables, get_array_name, c_data_type) }}
    const size_t _row = (size_t)_i * {{n_post}};
    for (int32_t _j = _jb; _j < _jend; _j++)
    {
        {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_row + _j', false) | indent(8) }}
    }
    {% endcall %}
    {% else %}
    {% call spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, _source_spikespace,
                   4) %}
    const size_t _row = (size_t)_i * {{n_post}};
    {% if prefetch_rows and statements | selectattr('weight') | list %}
    {# the row of a spike PREFETCH_SPIKES ahead (rows are n_post weights; a weight matrix larger than a
       core's cache, brian2_static.DENSE_PREFETCH_MIN_BYTES, is read from memory: fetch it while this
       row is added) #}
    if (_k + {{PREFETCH_SPIKES}} < _num_spikes)
    {
        const char* _ahead = (const char*)({{get_array_name(variables['w'])}} + (size_t){{_source_spikespace}}[_k + {{PREFETCH_SPIKES}}] * {{n_post}});
        for (int32_t _line = 0; _line < {{n_post}} * (int32_t)sizeof({{get_array_name(variables['w'])}}[0]); _line += 64)
            __builtin_prefetch(_ahead + _line, 0, 1);
    }
    {% endif %}
    for (int32_t _j = 0; _j < {{n_post}}; _j++)
    {
        {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_row + _j') | autoindent }}
    }
    {% endcall %}
    {% endif %}
{% endblock %}
