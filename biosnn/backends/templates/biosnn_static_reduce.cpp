{# biosnn: propagation of a static projection that connects every source neuron i to one and the same
   target neuron J, synapse i (conn.i == 0 .. N-1, one synapse each): the meters of the rate coding
   (spikes and synaptic operations per layer).  Each statement adds, per spiking neuron in the order of
   the spike space, its value to one target value: that value is held in a register through the loop
   (BIOSNN_KEEP_ORDER stops the compiler from reordering the sum under -ffast-math) and stored once,
   instead of a load and a store per spike through the row pointers and target list of
   biosnn_static_propagate.cpp.  A constant c per spike (X_post += c) is added as one addition n * c
   when that is exact (c and X integer-valued and |X| + n |c| within the float type's integers, 2^53 or
   2^24), otherwise n times.  The same additions in the same order: the sums of the CSR template and of
   Brian2's Synapses, bit for bit.  One thread (the loop is one chain of additions).
   USES_VARIABLES { _source_spikespace } #}
{% extends 'common_group.cpp' %}

{% block extra_headers %}
#include <cmath>
#ifndef BIOSNN_KEEP_ORDER
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BIOSNN_KEEP_ORDER(x) __asm__("" : "+x"(x))
#elif defined(__GNUC__) && defined(__aarch64__)
#define BIOSNN_KEEP_ORDER(x) __asm__("" : "+w"(x))
#else
#define BIOSNN_KEEP_ORDER(x) do { volatile auto _biosnn_keep = (x); (x) = _biosnn_keep; } while (0)
#endif
#endif
{% endblock %}

{% block maincode %}
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    {% for st in statements %}
    {% set _t = get_array_name(variables[st.target]) ~ '[' ~ (reduce_target if st.target_index == '_j' else '0') ~ ']' %}
    {% set vtype = c_data_type(variables[st.target].dtype) %}
    if (_num_spikes > 0)
    {
        {{vtype}} _acc = {{_t}};
        {% if not st.weight and not st.pre %}
        const double _c = {{st.const}};
        const double _exact = {{ '9007199254740992.0' if vtype == 'double' else '16777216.0' }};
        if (std::floor(_c) == _c && std::floor((double)_acc) == (double)_acc
            && std::fabs((double)_acc) + (double)_num_spikes * std::fabs(_c) <= _exact)
            _acc = _acc + ({{vtype}})((double)_num_spikes * _c);  // integers: n additions of c, exactly
        else
        {% endif %}
        for (int32_t _k = 0; _k < _num_spikes; _k++)
        {
            const int32_t _i = {{_source_spikespace}}[_k];
            {% if st.pre %}
            const {{c_data_type(variables[st.pre].dtype)}} _factor = {{get_array_name(variables[st.pre])}}[{{st.pre_index}}];
            {% endif %}
            {% set _w = (get_array_name(variables['w']) ~ '[_i]') if st.weight else '' %}
            {% set _f = '_factor' if st.pre else (st.const if st.const is not none else '') %}
            _acc += {{ _w }}{{ ' * ' if (_w and _f) else '' }}{{ _f }};
            BIOSNN_KEEP_ORDER(_acc);
        }
        {{_t}} = _acc;
    }
    {% endfor %}
{% endblock %}
