{# biosnn: pieces shared by the static-projection templates (biosnn_static_propagate.cpp: CSR,
   biosnn_static_dense.cpp: all-to-all, biosnn_static_conv.cpp: implicit convolution).
   add_statements: the additions of the statements for one synapse; widx is the C expression of
   the synapse's index into w (per-synapse weight or kernel entry); atomic=False where no two
   threads can write the same target.
   spike_loop: the loop over the source's spiking neurons _i (OpenMP-parallel when enabled), with
   the presynaptic factors loaded; the caller's block is the body. #}
{% macro add_statements(statements, variables, get_array_name, openmp_pragma, widx, atomic=True) %}
{% for st in statements %}
{% set _w = (get_array_name(variables['w']) ~ '[' ~ widx ~ ']') if st.weight else '' %}
{% set _f = ('_factor' ~ loop.index) if st.pre else (st.const if st.const is not none else '') %}
{% if atomic and openmp_pragma('with_openmp') %}
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

{% macro spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, spikespace, chunk) %}
const int32_t _num_spikes = {{spikespace}}[_num_source_spikespace - 1];
{% if openmp_pragma('with_openmp') %}
#pragma omp parallel for schedule(dynamic, {{chunk}})
{% endif %}
for (int32_t _k = 0; _k < _num_spikes; _k++)
{
    const int32_t _i = {{spikespace}}[_k];
    {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
    {{ caller() }}
}
{% endmacro %}
