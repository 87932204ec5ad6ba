/* Fused CPU loops of one projection iteration: see cdinn/retrieval/kernels.py.
 *
 * Arrays arrive as C-contiguous buffers (numpy views of torch CPU tensors); complex64 is a
 * pair of floats. Each call makes one pass over memory, split into contiguous ranges over
 * `threads` OpenMP threads. On x86-64 each range loop is compiled for AVX-512, AVX2 and the
 * baseline, chosen at run time (GCC target clones), so one build runs on any x86-64 CPU.
 * No fast-math: a NaN in the data stays a NaN in the result and in chi².
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* Rescale f[lo:hi] by a / |f| (+ fr where masked); return sum(|f| a) and sum(w |f|^2) over the range. */
CLONES static void modulus_range(float *f, const float *a, const float *w, const float *fr,
                                 Py_ssize_t lo, Py_ssize_t hi, double *overlap, double *power)
{
    double ov = 0.0, pw = 0.0;
    if (w) {
#pragma omp simd reduction(+ : ov, pw)
        for (Py_ssize_t i = lo; i < hi; i++) {
            float re = f[2 * i], im = f[2 * i + 1];
            float m2 = re * re + im * im;
            float factor = a[i] / sqrtf(m2 > 1e-30f ? m2 : 1e-30f);
            m2 *= w[i];
            ov += m2 * factor;
            pw += m2;
            factor += fr[i];
            f[2 * i] = re * factor;
            f[2 * i + 1] = im * factor;
        }
    } else {
#pragma omp simd reduction(+ : ov, pw)
        for (Py_ssize_t i = lo; i < hi; i++) {
            float re = f[2 * i], im = f[2 * i + 1];
            float m2 = re * re + im * im;
            float factor = a[i] / sqrtf(m2 > 1e-30f ? m2 : 1e-30f);
            ov += m2 * factor;
            pw += m2;
            f[2 * i] = re * factor;
            f[2 * i + 1] = im * factor;
        }
    }
    *overlap = ov;
    *power = pw;
}

/* x[lo:hi] <- p + s (cx x + cp p), s = outside[lo:hi]. */
CLONES static void relax_range(float *x, const float *p, const float *s, float cx, float cp, Py_ssize_t lo, Py_ssize_t hi)
{
#pragma omp simd
    for (Py_ssize_t i = lo; i < hi; i++) {
        float re = p[2 * i], im = p[2 * i + 1];
        x[2 * i] = re + s[i] * (cx * x[2 * i] + cp * re);
        x[2 * i + 1] = im + s[i] * (cx * x[2 * i + 1] + cp * im);
    }
}

static int take(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t nbytes, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->len != nbytes) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, view->len, nbytes);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* modulus(field, amplitude, weight, free, chi2, norm2, batch, n, threads)
 * field (batch, n) complex64, rescaled in place by A/|F| (+ free); amplitude, weight, free
 * float32, (n) shared by the batch or (batch, n) one per item (N patterns iterated together;
 * weight and free None when every pixel was measured); norm2 float64 sum(A^2), (1) shared or
 * (batch); chi2 (batch) float32 gets, per batch item, the closed form of
 * cdinn.physics.metrics.chi2_from_sums from sum(|F| A), sum(w |F|^2) and norm2 (in double;
 * tests hold the two equal). Each item is computed as it would be alone. */
static PyObject *modulus(PyObject *self, PyObject *args)
{
    PyObject *o_field, *o_amp, *o_weight, *o_free, *o_chi2, *o_norm2;
    Py_ssize_t batch, n;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOOnni", &o_field, &o_amp, &o_weight, &o_free, &o_chi2, &o_norm2, &batch, &n, &threads))
        return NULL;
    int masked = o_weight != Py_None;
    Py_buffer probe;
    if (PyObject_GetBuffer(o_amp, &probe, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    int per_item = batch > 1 && probe.len == batch * n * 4;
    PyBuffer_Release(&probe);
    Py_ssize_t items = per_item ? batch : 1;
    Py_buffer bufs[6];
    struct { PyObject *obj; int writable; Py_ssize_t nbytes; const char *name; } want[6] = {
        {o_field, 1, batch * n * 8, "field"}, {o_amp, 0, items * n * 4, "amplitude"}, {o_chi2, 1, batch * 4, "chi2"},
        {o_norm2, 0, items * 8, "norm2"}, {o_weight, 0, items * n * 4, "weight"}, {o_free, 0, items * n * 4, "free"}};
    int held = 0, count = masked ? 6 : 4;
    for (; held < count; held++)
        if (take(want[held].obj, &bufs[held], want[held].writable, want[held].nbytes, want[held].name) < 0)
            break;
    if (held < count) {
        while (held-- > 0)
            PyBuffer_Release(&bufs[held]);
        return NULL;
    }
    float *field = (float *)bufs[0].buf;
    const float *amp = (const float *)bufs[1].buf;
    float *chi2 = (float *)bufs[2].buf;
    const double *norms = (const double *)bufs[3].buf;
    const float *weight = masked ? (const float *)bufs[4].buf : NULL;
    const float *free_ = masked ? (const float *)bufs[5].buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < batch; b++) {
        float *f = field + 2 * b * n;
        Py_ssize_t at = per_item ? b * n : 0;
        const float *a = amp + at, *w = masked ? weight + at : NULL, *fr = masked ? free_ + at : NULL;
        double norm2 = norms[per_item ? b : 0];
        double overlap = 0.0, power = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : overlap, power)
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            double ov, pw;
            modulus_range(f, a, w, fr, n * t / nt, n * (t + 1) / nt, &ov, &pw);
            overlap += ov;
            power += pw;
        }
        /* clamps written so that a NaN passes through, as torch's clamp_min lets it */
        double denominator = power * norm2 < 1e-300 ? 1e-300 : power * norm2;
        double value = 1.0 - overlap * overlap / denominator;
        chi2[b] = (float)(value < 0.0 ? 0.0 : value);
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < count; i++)
        PyBuffer_Release(&bufs[i]);
    Py_RETURN_NONE;
}

/* relax(x, p, outside, cx, cp, batch, n, shared, threads)
 * x <- p + outside * (cx x + cp p), in place; x, p (batch, n) complex64; outside float32,
 * (n) when shared by the batch, else (batch, n). */
static PyObject *relax(PyObject *self, PyObject *args)
{
    PyObject *o_x, *o_p, *o_out;
    float cx, cp;
    Py_ssize_t batch, n;
    int shared, threads;
    if (!PyArg_ParseTuple(args, "OOOffnnpi", &o_x, &o_p, &o_out, &cx, &cp, &batch, &n, &shared, &threads))
        return NULL;
    Py_buffer x, p, out;
    if (take(o_x, &x, 1, batch * n * 8, "x") < 0)
        return NULL;
    if (take(o_p, &p, 0, batch * n * 8, "p") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (take(o_out, &out, 0, (shared ? 1 : batch) * n * 4, "outside") < 0) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&x);
        return NULL;
    }
    float *xs = (float *)x.buf;
    const float *ps = (const float *)p.buf;
    const float *os = (const float *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    /* a shared support repeats over the batch; otherwise the batch is one flat loop */
    Py_ssize_t reps = shared ? batch : 1, len = shared ? n : batch * n;
    for (Py_ssize_t r = 0; r < reps; r++) {
#pragma omp parallel num_threads(threads)
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            relax_range(xs + 2 * r * len, ps + 2 * r * len, os, cx, cp, len * t / nt, len * (t + 1) / nt);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&p);
    PyBuffer_Release(&x);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"modulus", modulus, METH_VARARGS, "Give the far field the measured modulus in place; chi² per batch item."},
    {"relax", relax, METH_VARARGS, "x <- p + outside * (cx x + cp p), in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", "Fused CPU loops of a projection iteration.", -1, methods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
