{# biosnn: propagation of a static projection (no plasticity, no delay) in one pass.
   Per spiking presynaptic neuron i, its synapses are the contiguous range
   _rowptr[i] .. _rowptr[i+1] of the target list _post (CSR, sorted by i, then by
   synapse creation order: the same order as Brian2's own Synapses, hence the same
   floating-point sums).  Each statement adds  w * factor  to a post-synaptic
   variable, where w is a per-synapse weight or a shared kernel entry
   w[_kidx[s]], and factor a presynaptic variable or a constant.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'common_group.cpp' %}

{% block maincode %}
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    {% if openmp_pragma('with_openmp') %}
    #pragma omp parallel for schedule(dynamic, 16)
    {% endif %}
    for (int32_t _k = 0; _k < _num_spikes; _k++)
    {
        const int32_t _i = {{_source_spikespace}}[_k];
        {% for st in statements %}
        {% if st.pre %}
        const {{c_data_type(variables[st.pre].dtype)}} _factor{{loop.index}} = {{get_array_name(variables[st.pre])}}[{{st.pre_index}}];
        {% endif %}
        {% endfor %}
        const int32_t _end = {{_rowptr}}[_i + 1];
        #pragma GCC unroll 8
        for (int32_t _s = {{_rowptr}}[_i]; _s < _end; _s++)
        {
            const int32_t _j = {{_post}}[_s];
            {% for st in statements %}
            {% set _w = (get_array_name(variables['w']) ~ ('[' ~ _kidx ~ '[_s]]' if kernel else '[_s]')) if st.weight else '' %}
            {% set _f = ('_factor' ~ loop.index) if st.pre else (st.const if st.const is not none else '') %}
            {% if openmp_pragma('with_openmp') %}
            #pragma omp atomic
            {% endif %}
            {{get_array_name(variables[st.target])}}[{{st.target_index}}] += {{ _w }}{{ ' * ' if (_w and _f) else '' }}{{ _f }};
            {% endfor %}
        }
    }
{% endblock %}
