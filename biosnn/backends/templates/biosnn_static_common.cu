{# biosnn: the kernel and launch of the CUDA static-projection templates
   (biosnn_static_propagate.cu: CSR, biosnn_static_dense.cu: all-to-all,
   biosnn_static_conv.cu: implicit convolution); they fill in block spike_body.
   Blocks take the source's spiking neurons _i in a grid-stride loop (cuda_blocks blocks: one
   per source neuron up to 65535); the cuda_threads threads of a block take that neuron's
   synapses in a block-stride loop.  brian2cuda's threshold writes the spike space in arbitrary
   order and threads add concurrently, so the additions are atomic and sums equal the CPU's up
   to the order of floating-point additions (exactly, when the added values are integers).
   This replaces common_group.cu's grid sized by the number of synapses and its per-synapse
   bounds check. #}
{% extends 'common_group.cu' %}
{% from 'biosnn_static_macros.cpp' import load_factors %}

{% block kernel %}
__global__ void
_run_kernel_{{codeobj_name}}(
    int _N,
    int THREADS_PER_BLOCK,
    ///// KERNEL_PARAMETERS /////
    %KERNEL_PARAMETERS%
    )
{
    using namespace brian;

    ///// KERNEL_CONSTANTS /////
    %KERNEL_CONSTANTS%

    ///// kernel_lines /////
    {{kernel_lines|autoindent}}

    const int32_t _num_spikes = {{_source_spikespace}}[_num_source_spikespace - 1];
    for (int32_t _k = blockIdx.x; _k < _num_spikes; _k += gridDim.x)
    {
        const int32_t _i = {{_source_spikespace}}[_k];
        {{ load_factors(statements, variables, get_array_name, c_data_type) | autoindent }}
        {% block spike_body %}
        {% endblock %}
    }
}
{% endblock kernel %}

{% block prepare_kernel %}
    static const int num_threads = {{cuda_threads}};
    static const int num_blocks = {{cuda_blocks}};
{% endblock prepare_kernel %}
