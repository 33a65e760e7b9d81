{# biosnn: the additions of a static projection's statements for one synapse on the GPU (the
   atomic counterpart of add_statements in biosnn_static_macros.cpp); widx is the C expression
   of the synapse's index into w (per-synapse weight or kernel entry). #}
{% macro atomic_add_statements(statements, variables, get_array_name, c_data_type, widx) %}
{% for st in statements %}
{% set _w = (get_array_name(variables['w']) ~ '[' ~ widx ~ ']') if st.weight else '' %}
{% set _f = ('_factor' ~ loop.index) if st.pre else (st.const if st.const is not none else '') %}
atomicAdd(&{{get_array_name(variables[st.target])}}[{{st.target_index}}], ({{c_data_type(variables[st.target].dtype)}})({{ _w }}{{ ' * ' if (_w and _f) else '' }}{{ _f }}));
{% endfor %}
{% endmacro %}
