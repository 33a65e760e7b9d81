{# biosnn: propagation of a static convolution (the geometry of biosnn_static_conv.cpp) with the
   output channels innermost, so that the additions of one kernel row are one vectorised loop.
   For one statement  X_post += w [* factor]  onto a per-neuron X, when a kernel row makes
   enough contiguous additions (brian2_static.channels_last, CHANNELS_LAST_MIN_RUN).
   * _wT: the kernel group-major with the output channel last and kx flipped,
     wT[(((g * cin_g + cg) * kh + ky) * kw + kw - 1 - kx) * cout_g + o], made from w at the first
     step of every run (a run-time value: run_args overrides of w and values set between runs are
     read; before_run marks it stale).
   * per replica with spikes in this step: X of that replica is copied (channel-major) into a
     scratch buffer buf[((g * Ho + oy) * Wo + ox) * cout_g + o], each spike adds, for each output
     row oy it reaches (ranges computed once per spike: no test per tap), the kernel row to the
     buffer: with stride 1 along the width the taps of a row are one contiguous run of
     (taps in the row) * cout_g values in both arrays, else cout_g values per tap; the buffer is
     copied back.  A replica whose spikes make fewer additions than it has outputs adds in place,
     as biosnn_static_conv.cpp does (a copy would cost more).  Each target gets at most one
     addition per spiking input, in the order of the spike space, onto its own value: the same
     sums as biosnn_static_conv.cpp and Brian2's Synapses, bit for bit.
   * memory: _wT and each buffer start on a cache line (64 bytes), so that a kernel row and a buffer
     position of cout_g values (8 doubles or 16 floats: a line, or a multiple of it) never straddle two
     lines (a stand-alone copy of LeNet-5's conv2 loop, AVX-512 on an AMD EPYC: 1.3x the CPU time
     with the buffers 16 bytes off a line, as std::vector's storage is); the
     copies in and out transpose tiles of 8 positions x 8 channels in registers (_biosnn_tr8) where
     cout_g is a multiple of 8 and the compiler has native vectors of 8 values (see the macro transpose).
   * replicas: the spikes are put in order of replica first (stable: the spike-space order within
     a replica); with OpenMP, threads own replicas (R > 1, a buffer each) or blocks of output
     rows (R = 1, one buffer), no atomic additions.
   USES_VARIABLES { _source_spikespace } #}
{% extends 'common_group.cpp' %}
{% from 'biosnn_static_macros.cpp' import conv_decode, conv_taps, load_factors, transpose %}

{% block extra_headers %}
#include <vector>
#include <cstring>
{% if openmp_pragma('with_openmp') %}
#include <omp.h>
{% endif %}
{# _biosnn_aligned: the start of n values in v at a multiple of 64 bytes (a cache line: the kernel rows and buffer
   positions of cout_g values, 64 bytes or a multiple of it, then never straddle two lines) #}
template <typename T> static T* _biosnn_aligned(std::vector<T>& v, size_t n)
{
    v.resize(n + 64 / sizeof(T));
    return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~(uintptr_t)63);
}
{# _biosnn_tr8: d[c * ds + r] = s[r * ss + c] for r, c < 8, in registers (vectors of 8 values: 3 rounds of
   shuffles); defined (BIOSNN_TR8) where those vectors are native registers: 8 doubles with AVX-512, 8 floats
   with AVX (GCC >= 12 or clang: __builtin_shufflevector); not inlined: inlined (GCC 12, AVX-512), its 24 vector
   registers made the spike loop spill and run up to 1.25x slower (benchmarks/conv_propagation.py --perf-runs) #}
#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 12) && defined({{'__AVX512F__' if c_data_type(variables[statements[0].target].dtype) == 'double' else '__AVX__'}})
#define BIOSNN_TR8
{% if conv.cout_g % 8 == 0 %}
extern "C" const int biosnn_tr8_{{codeobj_name}} = 1;  // in the binary's symbols: this object transposes in registers
{% endif %}
#define _BIOSNN_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
template <typename T> static __attribute__((noinline)) void _biosnn_tr8(const T* __restrict__ s, long ss, T* __restrict__ d, long ds)
{
    typedef T V __attribute__((vector_size(8 * sizeof(T))));
    V r[8];
    for (int k = 0; k < 8; k++)
        std::memcpy(&r[k], s + k * ss, sizeof(V));
    V a[8], b[8];
    for (int k = 0; k < 8; k += 2)  // rows k, k + 1: elements interleaved one by one
    {
        a[k] = _BIOSNN_SHUF(r[k], r[k + 1], 0, 8, 2, 10, 4, 12, 6, 14);
        a[k + 1] = _BIOSNN_SHUF(r[k], r[k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int k = 0; k < 8; k += 4)  // then two by two
        for (int h = 0; h < 2; h++)
        {
            b[k + h] = _BIOSNN_SHUF(a[k + h], a[k + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            b[k + h + 2] = _BIOSNN_SHUF(a[k + h], a[k + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int k = 0; k < 4; k++)  // then four by four: column k, column k + 4
    {
        const V lo = _BIOSNN_SHUF(b[k], b[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        const V hi = _BIOSNN_SHUF(b[k], b[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        std::memcpy(d + k * ds, &lo, sizeof(V));
        std::memcpy(d + (k + 4) * ds, &hi, sizeof(V));
    }
}
#endif
{% endblock %}

{% block before_code %}
{{get_array_name(variables['_wT_made'])}}[0] = 0;
{% endblock %}

{% block maincode %}
    {% set st = statements[0] %}
    {% set _v = get_array_name(variables[st.target]) %}
    {% set _w = get_array_name(variables['w']) %}
    {% set vtype = c_data_type(variables[st.target].dtype) %}
    {% set wtype = c_data_type(variables['w'].dtype) %}
    {% set HW = conv.Ho * conv.Wo %}
    {% set OHW = conv.O * conv.Ho * conv.Wo %}
    {% set per_line = 64 // (8 if vtype == 'double' else 4) %}
    {% set OHW_line = ((OHW + per_line - 1) // per_line) * per_line %}{# a replica's buffer: whole cache lines #}
    {% set threads = openmp_pragma('get_num_threads') | int %}
    {% set by_rows = openmp_pragma('with_openmp') and conv.R == 1 %}
    {% set by_replicas = openmp_pragma('with_openmp') and conv.R > 1 %}
    {% set factor = (' * _factor1' if st.pre else (' * ' ~ st.const) if st.const is not none else '') %}
    {% set per_spike = conv.cout_g * ((conv.kh + conv.sh - 1) // conv.sh) * ((conv.kw + conv.sw - 1) // conv.sw) %}
    {% set TAPS = conv.cin_g * conv.kh * conv.kw %}
    {# storage (_wT_mem, _buf_mem) and its part that starts on a cache line (_wT, _buf) #}
    static std::vector<{{wtype}}> _wT_mem;
    static std::vector<{{vtype}}> _buf_mem;
    static {{wtype}}* _wT = nullptr;
    static {{vtype}}* _buf = nullptr;
    static std::vector<int32_t> _first, _next, _order;
    if (!{{get_array_name(variables['_wT_made'])}}[0])
    {
        {# wT[(((g * cin_g + cg) * kh + ky) * kw + kw - 1 - kx) * cout_g + o] = w[(((g * cout_g + o) * cin_g + cg) * kh + ky) * kw + kx] #}
        _wT = _biosnn_aligned(_wT_mem, {{conv.O * TAPS}});
        for (int32_t _oc = 0; _oc < {{conv.O}}; _oc++)
            for (int32_t _t = 0; _t < {{TAPS}}; _t++)
                _wT[((size_t)(_oc / {{conv.cout_g}}) * {{TAPS}} + _t + {{conv.kw - 1}} - 2 * (_t % {{conv.kw}}))
                    * {{conv.cout_g}} + _oc % {{conv.cout_g}}] = {{_w}}[(size_t)_oc * {{TAPS}} + _t];
        _buf = _biosnn_aligned(_buf_mem, (size_t){{"omp_get_max_threads()" if by_replicas else 1}} * {{OHW_line}});  // a buffer per thread (replicas)
        {{get_array_name(variables['_wT_made'])}}[0] = 1;
    }
    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    if (_num_spikes > 0)
    {
        {% if conv.R > 1 %}
        {# the spikes in order of replica (counting sort, stable) #}
        _first.assign({{conv.R + 1}}, 0);
        _next.resize({{conv.R}});
        _order.resize(_num_spikes);
        for (int32_t _k = 0; _k < _num_spikes; _k++)
            _first[{{_source_spikespace}}[_k] / {{conv.C * conv.H * conv.W}} + 1]++;
        for (int32_t _r = 0; _r < {{conv.R}}; _r++)
        {
            _first[_r + 1] += _first[_r];
            _next[_r] = _first[_r];
        }
        for (int32_t _k = 0; _k < _num_spikes; _k++)
        {
            const int32_t _i = {{_source_spikespace}}[_k];
            _order[_next[_i / {{conv.C * conv.H * conv.W}}]++] = _i;
        }
        const int32_t* _spikes = _order.data();
        {% else %}
        const int32_t* _spikes = {{_source_spikespace}};
        {% endif %}
        const {{wtype}}* __restrict__ _kT = _wT;
        {% if by_replicas %}
        #pragma omp parallel for schedule(dynamic, 1)
        {% elif by_rows %}
        #pragma omp parallel for schedule(static)
        {% endif %}
        for (int32_t _unit = 0; _unit < {{conv.R if conv.R > 1 else (threads if by_rows else 1)}}; _unit++)
        {
            {% if conv.R > 1 %}
            const int32_t _ur = _unit;
            const int32_t _k0 = _first[_unit], _k1 = _first[_unit + 1];
            if (_k0 == _k1)
                continue;
            {% else %}
            const int32_t _ur = 0;
            const int32_t _k0 = 0, _k1 = _num_spikes;
            {% endif %}
            {% if by_rows %}
            const int32_t _oy0 = {{conv.Ho}} * _unit / {{threads}}, _oy1 = {{conv.Ho}} * (_unit + 1) / {{threads}};
            {% else %}
            const int32_t _oy0 = 0, _oy1 = {{conv.Ho}};
            {% endif %}
            {% if not by_rows %}
            if ((int64_t)(_k1 - _k0) * {{per_spike}} < {{OHW}})
            {
                {# few spikes: copying the replica would cost more than adding in place (channel-major) #}
                for (int32_t _k = _k0; _k < _k1; _k++)
                {
                    const int32_t _i = _spikes[_k];
                    {{ conv_decode(conv) | indent(20) }}
                    {{ load_factors(statements, variables, get_array_name, c_data_type) | indent(20) }}
                    for (int32_t _o = _g * {{conv.cout_g}}; _o < (_g + 1) * {{conv.cout_g}}; _o++)
                    {
                        {{ conv_taps(conv, statements, variables, get_array_name, openmp_pragma, false) | indent(24) }}
                    }
                }
                continue;
            }
            {% endif %}
            {# buf[((g * Ho + oy) * Wo + ox) * cout_g + o]: group-major, channels of the group last #}
            {{vtype}}* __restrict__ _bf = _buf + {{('(size_t)omp_get_thread_num() * ' ~ OHW_line) if by_replicas else '0'}};
            {{vtype}}* __restrict__ _vr = {{_v}} + (size_t)_ur * {{OHW}};
            {{ transpose(conv, '_bf', '_vr', true, 'BIOSNN_TR8') | indent(12) }}
            for (int32_t _k = _k0; _k < _k1; _k++)
            {
                const int32_t _i = _spikes[_k];
                {{ conv_decode(conv) | indent(16) }}
                {{ load_factors(statements, variables, get_array_name, c_data_type) | indent(16) }}
                {# output rows oy = (y + ph - ky) / sh for 0 <= ky < kh, columns likewise #}
                int32_t _ylo = _y + {{conv.ph - conv.kh + 1}};
                _ylo = _ylo > 0 ? (_ylo + {{conv.sh - 1}}) / {{conv.sh}} : 0;
                if (_ylo < _oy0)
                    _ylo = _oy0;
                int32_t _yhi = (_y + {{conv.ph}}) / {{conv.sh}} + 1;
                if (_yhi > _oy1)
                    _yhi = _oy1;
                int32_t _xlo = _x + {{conv.pw - conv.kw + 1}};
                _xlo = _xlo > 0 ? (_xlo + {{conv.sw - 1}}) / {{conv.sw}} : 0;
                int32_t _xhi = (_x + {{conv.pw}}) / {{conv.sw}} + 1;
                if (_xhi > {{conv.Wo}})
                    _xhi = {{conv.Wo}};
                if (_xlo >= _xhi)
                    continue;
                {{vtype}}* __restrict__ _bg = _bf + (size_t)_g * {{HW * conv.cout_g}};
                const {{wtype}}* __restrict__ _kc = _kT + (size_t)(_g * {{conv.cin_g}} + _cg) * {{conv.kh * conv.kw * conv.cout_g}};
                for (int32_t _oy = _ylo; _oy < _yhi; _oy++)
                {
                    const int32_t _ky = _y + {{conv.ph}} - _oy * {{conv.sh}};
                    {% if conv.sw == 1 %}
                    {# stride 1: the taps of a row are contiguous in both (kx flipped in wT) #}
                    {{vtype}}* __restrict__ _d = _bg + ((size_t)_oy * {{conv.Wo}} + _xlo) * {{conv.cout_g}};
                    const {{wtype}}* __restrict__ _s = _kc
                        + (size_t)(_ky * {{conv.kw}} + {{conv.kw - 1 - conv.pw}} - _x + _xlo) * {{conv.cout_g}};
                    const int32_t _n = (_xhi - _xlo) * {{conv.cout_g}};
                    for (int32_t _t = 0; _t < _n; _t++)
                        _d[_t] += _s[_t]{{ factor }};
                    {% else %}
                    for (int32_t _ox = _xlo; _ox < _xhi; _ox++)
                    {
                        const int32_t _kx = _x + {{conv.pw}} - _ox * {{conv.sw}};
                        {{vtype}}* __restrict__ _d = _bg + ((size_t)_oy * {{conv.Wo}} + _ox) * {{conv.cout_g}};
                        const {{wtype}}* __restrict__ _s = _kc + (size_t)(_ky * {{conv.kw}} + {{conv.kw - 1}} - _kx) * {{conv.cout_g}};
                        for (int32_t _o = 0; _o < {{conv.cout_g}}; _o++)
                            _d[_o] += _s[_o]{{ factor }};
                    }
                    {% endif %}
                }
            }
            {{ transpose(conv, '_bf', '_vr', false, 'BIOSNN_TR8') | indent(12) }}
        }
    }
{% endblock %}
