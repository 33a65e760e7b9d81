{# biosnn: one neuron group's step in one loop (biosnn.backends.brian2_fused): the operations scheduled just
   before its spike thresholder (blocks biosnn_updates, in their order), the threshold condition (block
   'threshold') and, where biosnn_reset, the reset of the neurons that spiked (block 'reset'), per neuron in
   that order; the spike space gets the spiking neurons in increasing order, as from Brian2's threshold.cpp.
   Each block's vector code runs in its own scope (it loads and stores its own variables, as its own code
   object did), so every neuron gets the same floating-point operations in the same order as from the
   separate code objects.  The scalar code of all blocks comes first: biosnn_fused.fuse_neuron_steps fuses
   only blocks whose scalar code declares constants (a line declared by two blocks, such as a shared
   subexpression, is written once).  A block that uses the shared subexpression biosnn_idle (IDLE_LOOPS of
   brian2_standalone) runs on no neuron while it is nonzero; when every block does, the loop runs over no
   neuron.  With AVX-512 (F, VL, BW; GCC or Clang), 64 neurons at a time: the blocks in an inner loop the compiler
   vectorises, the indices of the spiking ones written by a compress per 16; a scalar loop for the rest.
   USES_VARIABLES { N } #}
{% extends 'common_group.cpp' %}

{% block extra_headers %}
#if defined(__GNUC__) && defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#include <immintrin.h>
#define BIOSNN_FUSED_AVX512 1
#endif
{% endblock %}

{% block maincode %}
    //// MAIN CODE ////////////
    // scalar code (of every block, each line once)
    const int _vectorisation_idx = -1;
    {% set ns = namespace(seen=[]) %}
    {% for block in biosnn_blocks %}
    {% set _lines = scalar_code[block] if scalar_code[block] is string else scalar_code[block]|join('\n') %}
    {% for line in _lines.split('\n') %}
    {% if line.strip() and line.strip() not in ns.seen %}
    {% set ns.seen = ns.seen + [line.strip()] %}
    {{ line.strip() }}
    {% endif %}
    {% endfor %}
    {% endfor %}

    {% set _eventspace = get_array_name(eventspace_variable) %}
    int32_t* const __restrict _biosnn_events = {{_eventspace}};
    const size_t _biosnn_n = {% if biosnn_all_idle %}biosnn_idle ? 0 : {% endif %}N;
    long _count = 0;
    size_t _biosnn_start = 0;
    {% set _step %}
            {% for block in biosnn_updates %}
            {% if block in biosnn_idle_blocks and not biosnn_all_idle %}if (!biosnn_idle){% endif %}
            {
                {{vector_code[block]|autoindent}}
            }
            {% endfor %}
            char _biosnn_fired = 0;
            {% if 'threshold' in biosnn_idle_blocks and not biosnn_all_idle %}if (!biosnn_idle){% endif %}
            {
                {{vector_code['threshold']|autoindent}}
                _biosnn_fired = _cond;
            }
            {% if biosnn_reset %}
            if (_biosnn_fired)
            {
                {{vector_code['reset']|autoindent}}
            }
            {% endif %}
    {% endset %}
#ifdef BIOSNN_FUSED_AVX512
    const __m512i _biosnn_lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (; _biosnn_start + 64 <= _biosnn_n; _biosnn_start += 64)
    {
        int32_t _biosnn_flags[64];
        // not unrolled before the vectoriser sees it (completely unrolled, it stays scalar)
        #pragma GCC unroll 1
        for (int _biosnn_lane = 0; _biosnn_lane < 64; _biosnn_lane++)
        {
            const size_t _idx = _biosnn_start + _biosnn_lane;
            const size_t _vectorisation_idx = _idx;
            {{_step}}
            _biosnn_flags[_biosnn_lane] = _biosnn_fired;
        }
        for (int _biosnn_part = 0; _biosnn_part < 64; _biosnn_part += 16)
        {
            const __mmask16 _biosnn_mask = _mm512_test_epi32_mask(_mm512_loadu_si512(_biosnn_flags + _biosnn_part),
                                                                  _mm512_set1_epi32(1));
            // no branch on the mask (irregular spikes would mispredict it): compress into a register, then a
            // full store (a compress straight to memory is slow on AMD Zen 4); _count <= _biosnn_start +
            // _biosnn_part, so the 16 entries stay inside the first N of the spike space (entries past the
            // count are not read)
            const __m512i _biosnn_ids = _mm512_add_epi32(
                _mm512_set1_epi32((int32_t)(_biosnn_start + _biosnn_part)), _biosnn_lanes);
            _mm512_storeu_si512(_biosnn_events + _count, _mm512_maskz_compress_epi32(_biosnn_mask, _biosnn_ids));
            _count += __builtin_popcount((unsigned)_biosnn_mask);
        }
    }
#endif
    for (size_t _idx = _biosnn_start; _idx < _biosnn_n; _idx++)
    {
        const size_t _vectorisation_idx = _idx;
        {{_step}}
        _biosnn_events[_count] = _idx;
        _count += _biosnn_fired ? 1 : 0;
    }
    _biosnn_events[N] = _count;
{% endblock %}

{% block after_code %}
{% set _eventspace = get_array_name(eventspace_variable) %}
{{_eventspace}}[N] = 0;  // Note that this is not an off-by-1-error: the array has N+1 elements
{% endblock %}
