{# biosnn: propagation of a static projection (no plasticity, no delay) in one pass.
   Per spiking presynaptic neuron i, its synapses are the contiguous range
   _rowptr[i] .. _rowptr[i+1] of the target list _post (CSR, sorted by i, then by
   target j: the same order as Brian2's own Synapses, hence the same floating-point
   sums).  Each statement adds  w * factor  to a post-synaptic variable, where w is
   a per-synapse weight and factor a presynaptic variable or a constant.  With
   OpenMP, threads own blocks of targets: each takes the spikes in order and, in
   each spiking neuron's row, the synapses onto its block (found by binary search:
   rows are sorted by target), so no addition is atomic and every target gets its
   additions in the same order as with one thread.  Rows shorter than 32 synapses
   on average (long_rows false) run on one thread; with a shared (one-value)
   target variable, threads share the spikes and add atomically.  One synapse per source neuron
   (one_per_source: synapse i of neuron i, e.g. average pooling): no row lookup.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import add_statements, load_factors, spike_loop, target_blocks %}

{% block maincode %}
    {% if openmp_pragma('with_openmp') and blocked and long_rows %}
    {% call target_blocks(_source_spikespace, n_post, target_block) %}
    const int32_t _end = {{_rowptr}}[_i + 1];
    int32_t _s = {{_rowptr}}[_i];
    int32_t _hi = _end;
    while (_s < _hi)  // first synapse of the row onto a target >= _jb
    {
        const int32_t _mid = _s + ((_hi - _s) >> 1);
        if ({{_post}}[_mid] < _jb)
            _s = _mid + 1;
        else
            _hi = _mid;
    }
    if (_s == _end || {{_post}}[_s] >= _jend)
        continue;
    {{ load_factors(statements, variables, get_array_name, c_data_type) }}
    for (; _s < _end && {{_post}}[_s] < _jend; _s++)
    {
        const int32_t _j = {{_post}}[_s];
        {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_s', false) | indent(8) }}
    }
    {% endcall %}
    {% else %}
    {# short rows (pooling, meters): one thread, no atomics (a target block per thread would visit
       every spike once per block for one addition); a shared target: threads share spikes, atomics #}
    {% set _parallel = not blocked %}
    {% call spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, _source_spikespace,
                   16, _parallel) %}
    {% if one_per_source %}
    {# one synapse per source neuron, synapse i of neuron i (average pooling): no row pointers, no loop #}
    const int32_t _s = _i;
    const int32_t _j = {{_post}}[_s];
    {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_s', _parallel) }}
    {% else %}
    const int32_t _end = {{_rowptr}}[_i + 1];
    #pragma GCC unroll 8
    for (int32_t _s = {{_rowptr}}[_i]; _s < _end; _s++)
    {
        const int32_t _j = {{_post}}[_s];
        {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_s', _parallel) | autoindent }}
    }
    {% endif %}
    {% endcall %}
    {% endif %}
{% endblock %}
