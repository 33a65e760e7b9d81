{# biosnn: pieces shared by the static-projection templates (biosnn_static_propagate.cpp: CSR,
   biosnn_static_dense.cpp: all-to-all, biosnn_static_conv.cpp: implicit convolution).
   add_statements: the additions of the statements for one synapse; widx is the C expression of
   the synapse's index into w (per-synapse weight or kernel entry); atomic=False where no two
   threads can write the same target.
   spike_loop: the loop over the source's spiking neurons _i (OpenMP-parallel when enabled and
   parallel), with the presynaptic factors loaded; the caller's block is the body. #}
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

{% macro spike_loop(statements, variables, get_array_name, c_data_type, openmp_pragma, spikespace, chunk,
                    parallel=True) %}
const int32_t _num_spikes = {{spikespace}}[_num_source_spikespace - 1];
{% if parallel and openmp_pragma('with_openmp') %}
#pragma omp parallel for schedule(dynamic, {{chunk}})
{% endif %}
for (int32_t _k = 0; _k < _num_spikes; _k++)
{
    const int32_t _i = {{spikespace}}[_k];
    {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
    {{ caller() }}
}
{% endmacro %}

{# target_blocks: threads own blocks of `block` targets [_jb, _jend) and each takes every spiking
   neuron _i in the order of the spike space (no atomics, the order of additions of one thread);
   the caller's block is the body per (block, spike). #}
{% macro target_blocks(spikespace, n_post, block) %}
const int32_t _num_spikes = {{spikespace}}[_num_source_spikespace - 1];
#pragma omp parallel for schedule(static)
for (int32_t _jb = 0; _jb < {{n_post}}; _jb += {{block}})
{
    const int32_t _jend = _jb + {{block}} < {{n_post}} ? _jb + {{block}} : {{n_post}};
    for (int32_t _k = 0; _k < _num_spikes; _k++)
    {
        const int32_t _i = {{spikespace}}[_k];
        {{ caller() | indent(8) }}
    }
}
{% endmacro %}

{% macro conv_decode(geo) %}
{% if geo.R > 1 %}
const int32_t _r = _i / {{geo.C * geo.H * geo.W}};
const int32_t _c = (_i / {{geo.H * geo.W}}) % {{geo.C}};
{% else %}
const int32_t _r = 0;
const int32_t _c = _i / {{geo.H * geo.W}};
{% endif %}
const int32_t _y = (_i / {{geo.W}}) % {{geo.H}};
const int32_t _x = _i % {{geo.W}};
const int32_t _g = _c / {{geo.cin_g}};
const int32_t _cg = _c - _g * {{geo.cin_g}};
{% endmacro %}

{# conv_decode: replica _r, channel _c, position (_y, _x), group _g and channel in group _cg of spiking
   input _i of a convolution (biosnn_static_conv.cpp); conv_taps: its taps onto output channel _o #}
{% macro conv_taps(geo, statements, variables, get_array_name, openmp_pragma, atomic) %}
for (int32_t _ky = 0; _ky < {{geo.kh}}; _ky++)
{
    const int32_t _ny = _y + {{geo.ph}} - _ky;
    if (_ny < 0 || _ny % {{geo.sh}} != 0 || _ny / {{geo.sh}} >= {{geo.Ho}})
        continue;
    const int32_t _row = ((_r * {{geo.O}} + _o) * {{geo.Ho}} + _ny / {{geo.sh}}) * {{geo.Wo}};
    const int32_t _krow = ((_o * {{geo.cin_g}} + _cg) * {{geo.kh}} + _ky) * {{geo.kw}};
    for (int32_t _kx = 0; _kx < {{geo.kw}}; _kx++)
    {
        const int32_t _nx = _x + {{geo.pw}} - _kx;
        if (_nx < 0 || _nx % {{geo.sw}} != 0 || _nx / {{geo.sw}} >= {{geo.Wo}})
            continue;
        const int32_t _j = _row + _nx / {{geo.sw}};
        {{ add_statements(statements, variables, get_array_name, openmp_pragma, '_krow + _kx', atomic)
           | indent(8) }}
    }
}
{% endmacro %}

{# transpose: the copy between the replica's target (channel-major) and the buffer (group-major, channels last), output
   rows [_oy0, _oy1).  With `simd` (the name of a preprocessor symbol, e.g. __AVX512F__; biosnn_static_conv_hwc.cpp
   defines _biosnn_tr8 under it) and cout_g a multiple of 8: tiles of 8 positions x 8 channels, transposed in
   registers (8 vector loads, 8 vector stores); the positions left over (fewer than 8 at the end of the range) and
   every tile without the symbol: in tiles of 8 positions (one cache line of doubles), one scalar copy per value,
   so that both sides are read and written a cache line at a time (a plain loop per channel touches one line of
   the buffer per value, cout_g values apart).  A copy: the values, not their sums, bit for bit either way. #}
{% macro transpose(conv, buf, v, into_buffer, simd=none) %}
{% set HW = conv.Ho * conv.Wo %}
{% set tiles = simd is not none and conv.cout_g % 8 == 0 %}
for (int32_t _gg = 0; _gg < {{conv.O // conv.cout_g}}; _gg++)  // copy {{'in: CHW -> G HW cout_g' if into_buffer else 'out'}}
{
    const int32_t _p1 = _oy1 * {{conv.Wo}};
    int32_t _p0 = _oy0 * {{conv.Wo}};
    {% if tiles %}
#if defined({{simd}})
    for (; _p0 + 8 <= _p1; _p0 += 8)
        for (int32_t _o = 0; _o < {{conv.cout_g}}; _o += 8)
        {
            auto* __restrict__ _bp = {{buf}} + ((size_t)_gg * {{HW}} + _p0) * {{conv.cout_g}} + _o;
            auto* __restrict__ _vp = {{v}} + ((size_t)_gg * {{conv.cout_g}} + _o) * {{HW}} + _p0;
            {{'_biosnn_tr8(_vp, ' ~ HW ~ ', _bp, ' ~ conv.cout_g ~ ');' if into_buffer
              else '_biosnn_tr8(_bp, ' ~ conv.cout_g ~ ', _vp, ' ~ HW ~ ');'}}
        }
#endif
    {% endif %}
    for (; _p0 < _p1; _p0 += 8)
    {
        const int32_t _pn = _p1 - _p0 < 8 ? _p1 - _p0 : 8;
        for (int32_t _o = 0; _o < {{conv.cout_g}}; _o++)
        {
            auto* __restrict__ _bp = {{buf}} + ((size_t)_gg * {{HW}} + _p0) * {{conv.cout_g}} + _o;
            auto* __restrict__ _vp = {{v}} + ((size_t)_gg * {{conv.cout_g}} + _o) * {{HW}} + _p0;
            for (int32_t _p = 0; _p < _pn; _p++)
                {{'_bp[(size_t)_p * ' ~ conv.cout_g ~ '] = _vp[_p];' if into_buffer else '_vp[_p] = _bp[(size_t)_p * ' ~ conv.cout_g ~ '];'}}
        }
    }
}
{% endmacro %}
