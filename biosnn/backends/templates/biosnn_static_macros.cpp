{# biosnn: the additions of a static projection's statements for one synapse, shared by
   biosnn_static_propagate.cpp (CSR) and biosnn_static_conv.cpp (implicit convolution).
   widx: the C expression of the synapse's index into w (per-synapse weight or kernel entry). #}
{% macro add_statements(statements, variables, get_array_name, openmp_pragma, widx) %}
{% for st in statements %}
{% set _w = (get_array_name(variables['w']) ~ '[' ~ widx ~ ']') if st.weight else '' %}
{% set _f = ('_factor' ~ loop.index) if st.pre else (st.const if st.const is not none else '') %}
{% if openmp_pragma('with_openmp') %}
#pragma omp atomic
{% endif %}
{{get_array_name(variables[st.target])}}[{{st.target_index}}] += {{ _w }}{{ ' * ' if (_w and _f) else '' }}{{ _f }};
{% endfor %}
{% endmacro %}

{% macro load_factors(statements, variables, get_array_name, c_data_type) %}
{% for st in statements %}
{% if st.pre %}
const {{c_data_type(variables[st.pre].dtype)}} _factor{{loop.index}} = {{get_array_name(variables[st.pre])}}[{{st.pre_index}}];
{% endif %}
{% endfor %}
{% endmacro %}
