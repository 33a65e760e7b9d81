{# biosnn: propagation onto max-pool gates (the rate coding's, biosnn.codings.rate.spec) without a spike
   queue: the synapses of spiking presynaptic neuron i are _rowptr[i] .. _rowptr[i+1] of the target list
   _post (CSR, sorted by i, then by j, as Brian2's Synapses take them); one synapse per source neuron
   (one_per_source, non-overlapping windows): synapse i of neuron i, no row lookup.  One thread, the
   spikes in the order of the spike space: the statements of Brian2's Synapses in the same order.
   * gate (brian2_static.CountGate, the unsigned gate): per synapse s onto gate j,
       C[s] += 1;  F[j] = F[j] + (1 - F[j]) * int(C[s] > N[j]);  N[j] = N[j] + int(C[s] > N[j])
     with the per-synapse counter C of the projection (reset by its operation);
   * selected statements (the signed gate): synapse s makes statement _sel[s] only (-1: none),
     e.g. c<pos>[j] += sgn_pre for the synapse's window position pos.
   USES_VARIABLES { _rowptr, _post, _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import load_factors %}

{% block maincode %}
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    for (int32_t _k = 0; _k < _num_spikes; _k++)
    {
        const int32_t _i = {{_source_spikespace}}[_k];
        {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
        {% if one_per_source %}
        const int32_t _s = _i;
        {% else %}
        const int32_t _end = {{_rowptr}}[_i + 1];
        for (int32_t _s = {{_rowptr}}[_i]; _s < _end; _s++)
        {% endif %}
        {
            const int32_t _j = {{_post}}[_s];
            {% if gate %}
            {% set _c = get_array_name(variables[gate.counter]) ~ '[_s]' %}
            {% set _f = get_array_name(variables['_gate_fire']) ~ '[' ~ gate.fire_index ~ ']' %}
            {% set _n = get_array_name(variables['_gate_count']) ~ '[' ~ gate.count_index ~ ']' %}
            {{_c}} += 1;
            const int32_t _rise = ({{_c}} > {{_n}}) ? 1 : 0;
            {{_f}} = {{_f}} + (1 - {{_f}}) * _rise;
            {{_n}} = {{_n}} + _rise;
            {% else %}
            switch ({{_sel}}[_s])
            {
            {% for st in statements %}
            {% set _w = (get_array_name(variables['w']) ~ '[_s]') if st.weight else '' %}
            {% set _x = ('_factor' ~ loop.index) if st.pre else (st.const if st.const is not none else '') %}
            {% set _t = get_array_name(variables[st.target]) ~ '[' ~ st.target_index ~ ']' %}
            case {{loop.index0}}:
                {{_t}} += {{ _w }}{{ ' * ' if (_w and _x) else '' }}{{ _x }};
                break;
            {% endfor %}
            default:
                break;
            }
            {% endif %}
        }
    }
{% endblock %}
