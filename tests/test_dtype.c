/* Element-type decoders and encoders (src/formats/dtype.c) against literal
 * tables. The FP8 tables were written from the format definitions of
 * MODEL.md section 3 with exact rational arithmetic, independently of the C
 * decoders; the notable codes (+-0, NaN, infinities, max finite, smallest
 * subnormal) are also checked one by one below. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "formats/dtype.h"
#include "testutil.h"

static const float E4M3_OCP[256] = {
    /* 0x00 */ 0.0f, 0.001953125f, 0.00390625f, 0.005859375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    /* 0x08 */ 0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    /* 0x10 */ 0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    /* 0x18 */ 0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    /* 0x20 */ 0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    /* 0x28 */ 0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    /* 0x30 */ 0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    /* 0x38 */ 1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    /* 0x40 */ 2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    /* 0x48 */ 4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    /* 0x50 */ 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    /* 0x58 */ 16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    /* 0x60 */ 32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    /* 0x68 */ 64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    /* 0x70 */ 128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    /* 0x78 */ 256.0f, 288.0f, 320.0f, 352.0f, 384.0f, 416.0f, 448.0f, NAN,
    /* 0x80 */ -0.0f, -0.001953125f, -0.00390625f, -0.005859375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    /* 0x88 */ -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    /* 0x90 */ -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    /* 0x98 */ -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    /* 0xA0 */ -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    /* 0xA8 */ -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    /* 0xB0 */ -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    /* 0xB8 */ -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    /* 0xC0 */ -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    /* 0xC8 */ -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    /* 0xD0 */ -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    /* 0xD8 */ -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    /* 0xE0 */ -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    /* 0xE8 */ -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    /* 0xF0 */ -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
    /* 0xF8 */ -256.0f, -288.0f, -320.0f, -352.0f, -384.0f, -416.0f, -448.0f, NAN,
};
static const float E4M3_FNUZ[256] = {
    /* 0x00 */ 0.0f, 0.0009765625f, 0.001953125f, 0.0029296875f, 0.00390625f, 0.0048828125f, 0.005859375f, 0.0068359375f,
    /* 0x08 */ 0.0078125f, 0.0087890625f, 0.009765625f, 0.0107421875f, 0.01171875f, 0.0126953125f, 0.013671875f, 0.0146484375f,
    /* 0x10 */ 0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    /* 0x18 */ 0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    /* 0x20 */ 0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    /* 0x28 */ 0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    /* 0x30 */ 0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    /* 0x38 */ 0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    /* 0x40 */ 1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    /* 0x48 */ 2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    /* 0x50 */ 4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    /* 0x58 */ 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    /* 0x60 */ 16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    /* 0x68 */ 32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    /* 0x70 */ 64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    /* 0x78 */ 128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    /* 0x80 */ NAN, -0.0009765625f, -0.001953125f, -0.0029296875f, -0.00390625f, -0.0048828125f, -0.005859375f, -0.0068359375f,
    /* 0x88 */ -0.0078125f, -0.0087890625f, -0.009765625f, -0.0107421875f, -0.01171875f, -0.0126953125f, -0.013671875f, -0.0146484375f,
    /* 0x90 */ -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    /* 0x98 */ -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    /* 0xA0 */ -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    /* 0xA8 */ -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    /* 0xB0 */ -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    /* 0xB8 */ -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    /* 0xC0 */ -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    /* 0xC8 */ -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    /* 0xD0 */ -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    /* 0xD8 */ -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    /* 0xE0 */ -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    /* 0xE8 */ -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    /* 0xF0 */ -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    /* 0xF8 */ -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
};
static const float E5M2_OCP[256] = {
    /* 0x00 */ 0.0f, 1.52587890625e-05f, 3.0517578125e-05f, 4.57763671875e-05f, 6.103515625e-05f, 7.62939453125e-05f, 9.1552734375e-05f, 0.0001068115234375f,
    /* 0x08 */ 0.0001220703125f, 0.000152587890625f, 0.00018310546875f, 0.000213623046875f, 0.000244140625f, 0.00030517578125f, 0.0003662109375f, 0.00042724609375f,
    /* 0x10 */ 0.00048828125f, 0.0006103515625f, 0.000732421875f, 0.0008544921875f, 0.0009765625f, 0.001220703125f, 0.00146484375f, 0.001708984375f,
    /* 0x18 */ 0.001953125f, 0.00244140625f, 0.0029296875f, 0.00341796875f, 0.00390625f, 0.0048828125f, 0.005859375f, 0.0068359375f,
    /* 0x20 */ 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f, 0.015625f, 0.01953125f, 0.0234375f, 0.02734375f,
    /* 0x28 */ 0.03125f, 0.0390625f, 0.046875f, 0.0546875f, 0.0625f, 0.078125f, 0.09375f, 0.109375f,
    /* 0x30 */ 0.125f, 0.15625f, 0.1875f, 0.21875f, 0.25f, 0.3125f, 0.375f, 0.4375f,
    /* 0x38 */ 0.5f, 0.625f, 0.75f, 0.875f, 1.0f, 1.25f, 1.5f, 1.75f,
    /* 0x40 */ 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 5.0f, 6.0f, 7.0f,
    /* 0x48 */ 8.0f, 10.0f, 12.0f, 14.0f, 16.0f, 20.0f, 24.0f, 28.0f,
    /* 0x50 */ 32.0f, 40.0f, 48.0f, 56.0f, 64.0f, 80.0f, 96.0f, 112.0f,
    /* 0x58 */ 128.0f, 160.0f, 192.0f, 224.0f, 256.0f, 320.0f, 384.0f, 448.0f,
    /* 0x60 */ 512.0f, 640.0f, 768.0f, 896.0f, 1024.0f, 1280.0f, 1536.0f, 1792.0f,
    /* 0x68 */ 2048.0f, 2560.0f, 3072.0f, 3584.0f, 4096.0f, 5120.0f, 6144.0f, 7168.0f,
    /* 0x70 */ 8192.0f, 10240.0f, 12288.0f, 14336.0f, 16384.0f, 20480.0f, 24576.0f, 28672.0f,
    /* 0x78 */ 32768.0f, 40960.0f, 49152.0f, 57344.0f, INFINITY, NAN, NAN, NAN,
    /* 0x80 */ -0.0f, -1.52587890625e-05f, -3.0517578125e-05f, -4.57763671875e-05f, -6.103515625e-05f, -7.62939453125e-05f, -9.1552734375e-05f, -0.0001068115234375f,
    /* 0x88 */ -0.0001220703125f, -0.000152587890625f, -0.00018310546875f, -0.000213623046875f, -0.000244140625f, -0.00030517578125f, -0.0003662109375f, -0.00042724609375f,
    /* 0x90 */ -0.00048828125f, -0.0006103515625f, -0.000732421875f, -0.0008544921875f, -0.0009765625f, -0.001220703125f, -0.00146484375f, -0.001708984375f,
    /* 0x98 */ -0.001953125f, -0.00244140625f, -0.0029296875f, -0.00341796875f, -0.00390625f, -0.0048828125f, -0.005859375f, -0.0068359375f,
    /* 0xA0 */ -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f, -0.015625f, -0.01953125f, -0.0234375f, -0.02734375f,
    /* 0xA8 */ -0.03125f, -0.0390625f, -0.046875f, -0.0546875f, -0.0625f, -0.078125f, -0.09375f, -0.109375f,
    /* 0xB0 */ -0.125f, -0.15625f, -0.1875f, -0.21875f, -0.25f, -0.3125f, -0.375f, -0.4375f,
    /* 0xB8 */ -0.5f, -0.625f, -0.75f, -0.875f, -1.0f, -1.25f, -1.5f, -1.75f,
    /* 0xC0 */ -2.0f, -2.5f, -3.0f, -3.5f, -4.0f, -5.0f, -6.0f, -7.0f,
    /* 0xC8 */ -8.0f, -10.0f, -12.0f, -14.0f, -16.0f, -20.0f, -24.0f, -28.0f,
    /* 0xD0 */ -32.0f, -40.0f, -48.0f, -56.0f, -64.0f, -80.0f, -96.0f, -112.0f,
    /* 0xD8 */ -128.0f, -160.0f, -192.0f, -224.0f, -256.0f, -320.0f, -384.0f, -448.0f,
    /* 0xE0 */ -512.0f, -640.0f, -768.0f, -896.0f, -1024.0f, -1280.0f, -1536.0f, -1792.0f,
    /* 0xE8 */ -2048.0f, -2560.0f, -3072.0f, -3584.0f, -4096.0f, -5120.0f, -6144.0f, -7168.0f,
    /* 0xF0 */ -8192.0f, -10240.0f, -12288.0f, -14336.0f, -16384.0f, -20480.0f, -24576.0f, -28672.0f,
    /* 0xF8 */ -32768.0f, -40960.0f, -49152.0f, -57344.0f, -INFINITY, NAN, NAN, NAN,
};
static const float E5M2_FNUZ[256] = {
    /* 0x00 */ 0.0f, 7.62939453125e-06f, 1.52587890625e-05f, 2.288818359375e-05f, 3.0517578125e-05f, 3.814697265625e-05f, 4.57763671875e-05f, 5.340576171875e-05f,
    /* 0x08 */ 6.103515625e-05f, 7.62939453125e-05f, 9.1552734375e-05f, 0.0001068115234375f, 0.0001220703125f, 0.000152587890625f, 0.00018310546875f, 0.000213623046875f,
    /* 0x10 */ 0.000244140625f, 0.00030517578125f, 0.0003662109375f, 0.00042724609375f, 0.00048828125f, 0.0006103515625f, 0.000732421875f, 0.0008544921875f,
    /* 0x18 */ 0.0009765625f, 0.001220703125f, 0.00146484375f, 0.001708984375f, 0.001953125f, 0.00244140625f, 0.0029296875f, 0.00341796875f,
    /* 0x20 */ 0.00390625f, 0.0048828125f, 0.005859375f, 0.0068359375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    /* 0x28 */ 0.015625f, 0.01953125f, 0.0234375f, 0.02734375f, 0.03125f, 0.0390625f, 0.046875f, 0.0546875f,
    /* 0x30 */ 0.0625f, 0.078125f, 0.09375f, 0.109375f, 0.125f, 0.15625f, 0.1875f, 0.21875f,
    /* 0x38 */ 0.25f, 0.3125f, 0.375f, 0.4375f, 0.5f, 0.625f, 0.75f, 0.875f,
    /* 0x40 */ 1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 3.5f,
    /* 0x48 */ 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 10.0f, 12.0f, 14.0f,
    /* 0x50 */ 16.0f, 20.0f, 24.0f, 28.0f, 32.0f, 40.0f, 48.0f, 56.0f,
    /* 0x58 */ 64.0f, 80.0f, 96.0f, 112.0f, 128.0f, 160.0f, 192.0f, 224.0f,
    /* 0x60 */ 256.0f, 320.0f, 384.0f, 448.0f, 512.0f, 640.0f, 768.0f, 896.0f,
    /* 0x68 */ 1024.0f, 1280.0f, 1536.0f, 1792.0f, 2048.0f, 2560.0f, 3072.0f, 3584.0f,
    /* 0x70 */ 4096.0f, 5120.0f, 6144.0f, 7168.0f, 8192.0f, 10240.0f, 12288.0f, 14336.0f,
    /* 0x78 */ 16384.0f, 20480.0f, 24576.0f, 28672.0f, 32768.0f, 40960.0f, 49152.0f, 57344.0f,
    /* 0x80 */ NAN, -7.62939453125e-06f, -1.52587890625e-05f, -2.288818359375e-05f, -3.0517578125e-05f, -3.814697265625e-05f, -4.57763671875e-05f, -5.340576171875e-05f,
    /* 0x88 */ -6.103515625e-05f, -7.62939453125e-05f, -9.1552734375e-05f, -0.0001068115234375f, -0.0001220703125f, -0.000152587890625f, -0.00018310546875f, -0.000213623046875f,
    /* 0x90 */ -0.000244140625f, -0.00030517578125f, -0.0003662109375f, -0.00042724609375f, -0.00048828125f, -0.0006103515625f, -0.000732421875f, -0.0008544921875f,
    /* 0x98 */ -0.0009765625f, -0.001220703125f, -0.00146484375f, -0.001708984375f, -0.001953125f, -0.00244140625f, -0.0029296875f, -0.00341796875f,
    /* 0xA0 */ -0.00390625f, -0.0048828125f, -0.005859375f, -0.0068359375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    /* 0xA8 */ -0.015625f, -0.01953125f, -0.0234375f, -0.02734375f, -0.03125f, -0.0390625f, -0.046875f, -0.0546875f,
    /* 0xB0 */ -0.0625f, -0.078125f, -0.09375f, -0.109375f, -0.125f, -0.15625f, -0.1875f, -0.21875f,
    /* 0xB8 */ -0.25f, -0.3125f, -0.375f, -0.4375f, -0.5f, -0.625f, -0.75f, -0.875f,
    /* 0xC0 */ -1.0f, -1.25f, -1.5f, -1.75f, -2.0f, -2.5f, -3.0f, -3.5f,
    /* 0xC8 */ -4.0f, -5.0f, -6.0f, -7.0f, -8.0f, -10.0f, -12.0f, -14.0f,
    /* 0xD0 */ -16.0f, -20.0f, -24.0f, -28.0f, -32.0f, -40.0f, -48.0f, -56.0f,
    /* 0xD8 */ -64.0f, -80.0f, -96.0f, -112.0f, -128.0f, -160.0f, -192.0f, -224.0f,
    /* 0xE0 */ -256.0f, -320.0f, -384.0f, -448.0f, -512.0f, -640.0f, -768.0f, -896.0f,
    /* 0xE8 */ -1024.0f, -1280.0f, -1536.0f, -1792.0f, -2048.0f, -2560.0f, -3072.0f, -3584.0f,
    /* 0xF0 */ -4096.0f, -5120.0f, -6144.0f, -7168.0f, -8192.0f, -10240.0f, -12288.0f, -14336.0f,
    /* 0xF8 */ -16384.0f, -20480.0f, -24576.0f, -28672.0f, -32768.0f, -40960.0f, -49152.0f, -57344.0f,
};

/* e2m1: codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6; codes 8..15 their negatives. */
static const float E2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* Equal including the sign of zero; NaN equals NaN. */
static int same(float got, float want)
{
    if (isnan(want))
        return isnan(got);
    return got == want && signbit(got) == signbit(want);
}

static void check_table(float (*dec)(uint8_t), const float *table, const char *what)
{
    for (int c = 0; c < 256; c++) {
        float got = dec((uint8_t)c);
        if (!same(got, table[c]))
            fail_msg("%s code 0x%02X: decoded %a, table says %a", what, c, (double)got, (double)table[c]);
    }
}

static int count_nan(const float *table)
{
    int n = 0;
    for (int c = 0; c < 256; c++)
        n += isnan(table[c]) != 0;
    return n;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- decoders ---- */

static void test_e4m3_ocp_all_codes(void **state)
{
    (void)state;
    check_table(dt_e4m3_to_f32, E4M3_OCP, "e4m3");
    assert_int_equal(count_nan(E4M3_OCP), 2);
    assert_true(isnan(dt_e4m3_to_f32(0x7F)) && isnan(dt_e4m3_to_f32(0xFF)));
    assert_true(dt_e4m3_to_f32(0x00) == 0.0f && !signbit(dt_e4m3_to_f32(0x00)));
    assert_true(dt_e4m3_to_f32(0x80) == 0.0f && signbit(dt_e4m3_to_f32(0x80)));
    assert_true(dt_e4m3_to_f32(0x7E) == 448.0f);
    assert_true(dt_e4m3_to_f32(0xFE) == -448.0f);
    assert_true(dt_e4m3_to_f32(0x01) == ldexpf(1, -9));  /* smallest subnormal */
    assert_true(dt_e4m3_to_f32(0x07) == 7 * ldexpf(1, -9)); /* largest subnormal */
    assert_true(dt_e4m3_to_f32(0x08) == ldexpf(1, -6));  /* smallest normal */
    assert_true(dt_e4m3_to_f32(0x38) == 1.0f);
    for (int c = 0; c < 256; c++)
        assert_false(isinf(dt_e4m3_to_f32((uint8_t)c))); /* no infinity */
}

static void test_e4m3_fnuz_all_codes(void **state)
{
    (void)state;
    check_table(dt_e4m3fnuz_to_f32, E4M3_FNUZ, "e4m3fnuz");
    assert_int_equal(count_nan(E4M3_FNUZ), 1);
    assert_true(isnan(dt_e4m3fnuz_to_f32(0x80)));
    assert_true(dt_e4m3fnuz_to_f32(0x00) == 0.0f && !signbit(dt_e4m3fnuz_to_f32(0x00)));
    assert_true(dt_e4m3fnuz_to_f32(0x7F) == 240.0f);
    assert_true(dt_e4m3fnuz_to_f32(0xFF) == -240.0f);
    assert_true(dt_e4m3fnuz_to_f32(0x01) == ldexpf(1, -10));
    assert_true(dt_e4m3fnuz_to_f32(0x08) == ldexpf(1, -7));
    assert_true(dt_e4m3fnuz_to_f32(0x40) == 1.0f);
    /* same bits, half the OCP value, wherever both are finite */
    for (int c = 0; c < 256; c++)
        if (c != 0x80 && (c & 0x7F) != 0x7F)
            assert_true(2 * E4M3_FNUZ[c] == E4M3_OCP[c]);
}

static void test_e5m2_ocp_all_codes(void **state)
{
    (void)state;
    check_table(dt_e5m2_to_f32, E5M2_OCP, "e5m2");
    assert_int_equal(count_nan(E5M2_OCP), 6);
    assert_true(isinf(dt_e5m2_to_f32(0x7C)) && dt_e5m2_to_f32(0x7C) > 0);
    assert_true(isinf(dt_e5m2_to_f32(0xFC)) && dt_e5m2_to_f32(0xFC) < 0);
    for (int c = 0x7D; c <= 0x7F; c++) {
        assert_true(isnan(dt_e5m2_to_f32((uint8_t)c)));
        assert_true(isnan(dt_e5m2_to_f32((uint8_t)(c | 0x80))));
    }
    assert_true(dt_e5m2_to_f32(0x7B) == 57344.0f);
    assert_true(dt_e5m2_to_f32(0xFB) == -57344.0f);
    assert_true(dt_e5m2_to_f32(0x01) == ldexpf(1, -16));
    assert_true(dt_e5m2_to_f32(0x04) == ldexpf(1, -14));
    assert_true(dt_e5m2_to_f32(0x3C) == 1.0f);
    assert_true(signbit(dt_e5m2_to_f32(0x80)) && dt_e5m2_to_f32(0x80) == 0.0f);
}

static void test_e5m2_fnuz_all_codes(void **state)
{
    (void)state;
    check_table(dt_e5m2fnuz_to_f32, E5M2_FNUZ, "e5m2fnuz");
    assert_int_equal(count_nan(E5M2_FNUZ), 1);
    assert_true(isnan(dt_e5m2fnuz_to_f32(0x80)));
    assert_true(dt_e5m2fnuz_to_f32(0x7F) == 57344.0f);
    assert_true(dt_e5m2fnuz_to_f32(0xFF) == -57344.0f);
    assert_true(dt_e5m2fnuz_to_f32(0x7C) == 32768.0f); /* not infinity: fnuz has none */
    assert_true(dt_e5m2fnuz_to_f32(0x01) == ldexpf(1, -17));
    assert_true(dt_e5m2fnuz_to_f32(0x40) == 1.0f);
    for (int c = 0; c < 0x7C; c++)
        if (c != 0)
            assert_true(2 * E5M2_FNUZ[c] == E5M2_OCP[c]);
}

static void test_e2m1_all_codes(void **state)
{
    (void)state;
    for (int c = 0; c < 16; c++) {
        assert_true(same(dt_e2m1_to_f32((uint8_t)c), E2M1[c]));
        /* only the low nibble counts */
        assert_true(same(dt_e2m1_to_f32((uint8_t)(c | 0xA0)), E2M1[c]));
    }
}

static void test_e8m0_codes(void **state)
{
    (void)state;
    assert_true(dt_e8m0_to_f32(0) == 5.877471754111438e-39f); /* 2^-127, an fp32 subnormal */
    assert_true(dt_e8m0_to_f32(1) == 1.1754943508222875e-38f); /* 2^-126 */
    assert_true(dt_e8m0_to_f32(107) == 9.5367431640625e-07f);  /* 2^-20 */
    assert_true(dt_e8m0_to_f32(126) == 0.5f);
    assert_true(dt_e8m0_to_f32(127) == 1.0f);
    assert_true(dt_e8m0_to_f32(128) == 2.0f);
    assert_true(dt_e8m0_to_f32(132) == 32.0f);
    assert_true(dt_e8m0_to_f32(254) == 1.7014118346046923e38f); /* 2^127 */
    assert_true(isnan(dt_e8m0_to_f32(0xFF)));
    for (int e = 0; e < 255; e++) {
        int ex;
        float fr = frexpf(dt_e8m0_to_f32((uint8_t)e), &ex);
        assert_true(fr == 0.5f);
        assert_int_equal(ex - 1, e - 127);
    }
}

static void test_fp8_dispatch_and_bulk(void **state)
{
    (void)state;
    const struct {
        dtype_t t;
        const float *table;
    } kinds[] = {{DT_F8_E4M3, E4M3_OCP}, {DT_F8_E4M3FNUZ, E4M3_FNUZ}, {DT_F8_E5M2, E5M2_OCP},
                 {DT_F8_E5M2FNUZ, E5M2_FNUZ}};
    uint8_t codes[256];
    float out[256];
    for (int c = 0; c < 256; c++)
        codes[c] = (uint8_t)c;
    for (size_t k = 0; k < 4; k++) {
        assert_true(dt_is_fp8(kinds[k].t));
        for (int c = 0; c < 256; c++)
            assert_true(same(dt_fp8_to_f32(kinds[k].t, (uint8_t)c), kinds[k].table[c]));
        assert_int_equal(dt_to_f32(kinds[k].t, codes, out, 256), 0);
        for (int c = 0; c < 256; c++)
            assert_true(same(out[c], kinds[k].table[c]));
    }
    assert_false(dt_is_fp8(DT_F8_E8M0));
    assert_false(dt_is_fp8(DT_I8));
    assert_false(dt_is_fp8(DT_BF16));
    assert_false(dt_is_fp8(DT_MXFP4));
    /* not plain floats: refused */
    assert_int_equal(dt_to_f32(DT_I8, codes, out, 4), -1);
    assert_int_equal(dt_to_f32(DT_I32, codes, out, 4), -1);
    assert_int_equal(dt_to_f32(DT_F8_E8M0, codes, out, 4), -1);
    assert_int_equal(dt_to_f32(DT_MXFP4, codes, out, 4), -1);
}

static void test_plain_bulk(void **state)
{
    (void)state;
    const float f32[3] = {1.5f, -0.0f, 3e-40f};
    const uint16_t bf16[4] = {0x3F80, 0xC000, 0x7F80, 0x0001};
    const uint16_t f16[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001};
    float out[4];
    assert_int_equal(dt_to_f32(DT_F32, f32, out, 3), 0);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(dt_to_f32(DT_BF16, bf16, out, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && isinf(out[2]) && out[3] == ldexpf(1, -133));
    assert_int_equal(dt_to_f32(DT_F16, f16, out, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f && out[3] == ldexpf(1, -24));
}

static void test_names_and_sizes(void **state)
{
    (void)state;
    const struct {
        dtype_t t;
        const char *name;
        size_t size;
    } rows[] = {{DT_F32, "F32", 4},         {DT_F16, "F16", 2},
                {DT_BF16, "BF16", 2},       {DT_I8, "I8", 1},
                {DT_U8, "U8", 1},           {DT_I32, "I32", 4},
                {DT_I64, "I64", 8},         {DT_F8_E4M3, "F8_E4M3", 1},
                {DT_F8_E5M2, "F8_E5M2", 1}, {DT_F8_E4M3FNUZ, "F8_E4M3FNUZ", 1},
                {DT_F8_E5M2FNUZ, "F8_E5M2FNUZ", 1}, {DT_F8_E8M0, "F8_E8M0", 1}};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        dtype_t t;
        assert_string_equal(dt_name(rows[i].t), rows[i].name);
        assert_int_equal(dt_from_name(rows[i].name, &t), 0);
        assert_int_equal(t, rows[i].t);
        assert_int_equal(dt_elem_size(rows[i].t), rows[i].size);
        assert_int_equal(dt_bytes(rows[i].t, 6), 6 * rows[i].size);
    }
    dtype_t t = DT_F32;
    assert_int_equal(dt_from_name("F7", &t), -1);
    assert_int_equal(dt_from_name("f32", &t), -1);
    assert_int_equal(dt_from_name("", &t), -1);
    assert_int_equal(dt_from_name("F8_E4M3 ", &t), -1);
    assert_int_equal(t, DT_F32); /* untouched on failure */
    assert_int_equal(dt_elem_size(DT_MXFP4), 0);
    assert_int_equal(dt_bytes(DT_MXFP4, 64), 32);
    assert_string_equal(dt_name((dtype_t)DT_COUNT), "?");
}

/* ---- f16 / bf16 ---- */

static void test_f16_notable(void **state)
{
    (void)state;
    assert_true(dt_f16_to_f32(0x3C00) == 1.0f);
    assert_true(dt_f16_to_f32(0xBC00) == -1.0f);
    assert_true(dt_f16_to_f32(0x7BFF) == 65504.0f);
    assert_true(dt_f16_to_f32(0x0001) == 5.960464477539063e-08f); /* 2^-24 */
    assert_true(dt_f16_to_f32(0x03FF) == 6.097555160522461e-05f); /* largest subnormal */
    assert_true(dt_f16_to_f32(0x0400) == 6.103515625e-05f);       /* 2^-14 */
    assert_true(dt_f16_to_f32(0x3555) == 0.333251953125f);
    assert_true(dt_f16_to_f32(0x0000) == 0.0f && !signbit(dt_f16_to_f32(0x0000)));
    assert_true(dt_f16_to_f32(0x8000) == 0.0f && signbit(dt_f16_to_f32(0x8000)));
    assert_true(isinf(dt_f16_to_f32(0x7C00)) && dt_f16_to_f32(0x7C00) > 0);
    assert_true(isinf(dt_f16_to_f32(0xFC00)) && dt_f16_to_f32(0xFC00) < 0);
    assert_true(isnan(dt_f16_to_f32(0x7E00)));
    assert_true(isnan(dt_f16_to_f32(0x7C01)));
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
#ifdef __FLT16_MAX__
    /* the compiler's own half-precision conversion is the reference */
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 x;
        uint16_t b = (uint16_t)h;
        memcpy(&x, &b, 2);
        float want = (float)x;
        if (!same(dt_f16_to_f32(b), want))
            fail_msg("f16 0x%04X: got %a want %a", h, (double)dt_f16_to_f32(b), (double)want);
    }
#else
    skip();
#endif
}

static void test_bf16_decode(void **state)
{
    (void)state;
    assert_true(dt_bf16_to_f32(0x3F80) == 1.0f);
    assert_true(dt_bf16_to_f32(0xC000) == -2.0f);
    assert_true(dt_bf16_to_f32(0x4049) == 3.140625f);
    assert_true(dt_bf16_to_f32(0x3E80) == 0.25f);
    assert_true(dt_bf16_to_f32(0x7F7F) == 3.3895313892515355e38f); /* max finite */
    assert_true(dt_bf16_to_f32(0x0001) == ldexpf(1, -133));        /* smallest subnormal */
    assert_true(signbit(dt_bf16_to_f32(0x8000)) && dt_bf16_to_f32(0x8000) == 0.0f);
    assert_true(isinf(dt_bf16_to_f32(0x7F80)) && isinf(dt_bf16_to_f32(0xFF80)));
    assert_true(isnan(dt_bf16_to_f32(0x7FC0)) && isnan(dt_bf16_to_f32(0x7F81)));
    /* every code decodes to the fp32 with those top 16 bits */
    for (uint32_t b = 0; b < 65536; b++)
        if (!isnan(dt_bf16_to_f32((uint16_t)b)))
            assert_int_equal(f2u(dt_bf16_to_f32((uint16_t)b)), b << 16);
}

static void test_bf16_round_to_nearest_even(void **state)
{
    (void)state;
    /* exact values come back unchanged */
    for (uint32_t b = 0; b < 65536; b++) {
        float f = dt_bf16_to_f32((uint16_t)b);
        if (!isnan(f))
            assert_int_equal(dt_f32_to_bf16(f), b);
    }
    const float one = 1.0f, h = ldexpf(1, -8), tiny = ldexpf(1, -20);
    assert_int_equal(dt_f32_to_bf16(one + h), 0x3F80);            /* tie -> even (down) */
    assert_int_equal(dt_f32_to_bf16(one + 3 * h), 0x3F82);        /* tie -> even (up) */
    assert_int_equal(dt_f32_to_bf16(one + h + tiny), 0x3F81);     /* above the tie */
    assert_int_equal(dt_f32_to_bf16(one + h - tiny), 0x3F80);     /* below the tie */
    assert_int_equal(dt_f32_to_bf16(-(one + h)), 0xBF80);
    assert_int_equal(dt_f32_to_bf16(-(one + 3 * h)), 0xBF82);
    assert_int_equal(dt_f32_to_bf16(FLT_MAX), 0x7F80);            /* rounds past the max: inf */
    assert_int_equal(dt_f32_to_bf16(u2f(0x7F7F7FFF)), 0x7F7F);    /* just below the tie: max */
    assert_int_equal(dt_f32_to_bf16(INFINITY), 0x7F80);
    assert_int_equal(dt_f32_to_bf16(-INFINITY), 0xFF80);
    assert_int_equal(dt_f32_to_bf16(-0.0f), 0x8000);
    assert_true(isnan(dt_bf16_to_f32(dt_f32_to_bf16(NAN))));
    /* a NaN whose payload sits in the low bits must not become infinity */
    assert_true(isnan(dt_bf16_to_f32(dt_f32_to_bf16(u2f(0x7F800001)))));
    assert_true(isnan(dt_bf16_to_f32(dt_f32_to_bf16(u2f(0xFF800001)))));
    assert_int_equal(dt_f32_to_bf16(u2f(0x00008000)), 0x0000); /* subnormal tie -> even */
    assert_int_equal(dt_f32_to_bf16(u2f(0x00018000)), 0x0002);

    /* random bit patterns against a double-precision reference */
    tu_rng r = {tu_seed_from_time("bf16 rne")};
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)tu_next(&r);
        float f = u2f(u);
        if (isnan(f) || isinf(f))
            continue;
        uint32_t mag = u & 0x7FFFFFFF, lo = mag & 0xFFFF0000, hi = lo + 0x10000;
        double a = fabs((double)f), vlo = fabs((double)u2f(lo));
        double vhi = hi == 0x7F800000 ? ldexp(1, 128) : fabs((double)u2f(hi));
        uint32_t pick = (a - vlo < vhi - a) ? lo : (a - vlo > vhi - a) ? hi : ((lo >> 16) & 1) ? hi : lo;
        uint16_t want = (uint16_t)((pick >> 16) | ((u >> 16) & 0x8000));
        if (dt_f32_to_bf16(f) != want)
            fail_msg("bf16 of %a (0x%08X): got 0x%04X want 0x%04X", (double)f, u, dt_f32_to_bf16(f), want);
    }
}

/* ---- FP8 / FP4 encoders ---- */

/* For every pair of neighbouring positive codes: the midpoint goes to the
 * even code, a hair above to the upper, a hair below to the lower; the
 * negative side mirrors it. */
static void check_ties(uint8_t (*enc)(float), const float *table, int last, uint8_t negzero_code)
{
    for (int c = 0; c < last; c++) {
        float lo = table[c], hi = table[c + 1];
        float mid = (lo + hi) / 2; /* exact: neighbours differ by one step */
        uint8_t even = (c % 2 == 0) ? (uint8_t)c : (uint8_t)(c + 1);
        if (enc(mid) != even)
            fail_msg("midpoint %a between codes 0x%02X and 0x%02X gave 0x%02X", (double)mid, c, c + 1, enc(mid));
        assert_int_equal(enc(nextafterf(mid, INFINITY)), c + 1);
        assert_int_equal(enc(nextafterf(mid, 0)), c);
        uint8_t neg = enc(-mid);
        assert_int_equal(neg, even == 0 ? negzero_code : (0x80 | even));
    }
}

static void test_e4m3_encoder(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++)
        if ((c & 0x7F) != 0x7F && dt_f32_to_e4m3(E4M3_OCP[c]) != c)
            fail_msg("e4m3 code 0x%02X (%a) encodes to 0x%02X", c, (double)E4M3_OCP[c], dt_f32_to_e4m3(E4M3_OCP[c]));
    check_ties(dt_f32_to_e4m3, E4M3_OCP, 0x7D, 0x80);
    /* saturation to +-448, never the NaN codes */
    assert_int_equal(dt_f32_to_e4m3(448.0f), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(449.0f), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(464.0f), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(500.0f), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(1e30f), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(INFINITY), 0x7E);
    assert_int_equal(dt_f32_to_e4m3(-1e30f), 0xFE);
    assert_int_equal(dt_f32_to_e4m3(-INFINITY), 0xFE);
    assert_int_equal(dt_f32_to_e4m3(NAN) & 0x7F, 0x7F);
    /* underflow: half the smallest subnormal is a tie that goes to zero */
    assert_int_equal(dt_f32_to_e4m3(ldexpf(1, -10)), 0x00);
    assert_int_equal(dt_f32_to_e4m3(ldexpf(1, -11)), 0x00);
    assert_int_equal(dt_f32_to_e4m3(ldexpf(1.001f, -10)), 0x01);
    assert_int_equal(dt_f32_to_e4m3(-ldexpf(1, -11)), 0x80);
    assert_int_equal(dt_f32_to_e4m3(1e-30f), 0x00);
}

static void test_e4m3fnuz_encoder(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++)
        if (c != 0x80 && dt_f32_to_e4m3fnuz(E4M3_FNUZ[c]) != c)
            fail_msg("e4m3fnuz code 0x%02X (%a) encodes to 0x%02X", c, (double)E4M3_FNUZ[c],
                     dt_f32_to_e4m3fnuz(E4M3_FNUZ[c]));
    check_ties(dt_f32_to_e4m3fnuz, E4M3_FNUZ, 0x7E, 0x00);
    assert_int_equal(dt_f32_to_e4m3fnuz(0.0f), 0x00);
    assert_int_equal(dt_f32_to_e4m3fnuz(-0.0f), 0x00); /* no -0: 0x80 is NaN */
    assert_int_equal(dt_f32_to_e4m3fnuz(-1e-30f), 0x00);
    assert_int_equal(dt_f32_to_e4m3fnuz(240.0f), 0x7F);
    assert_int_equal(dt_f32_to_e4m3fnuz(250.0f), 0x7F);
    assert_int_equal(dt_f32_to_e4m3fnuz(1e30f), 0x7F);
    assert_int_equal(dt_f32_to_e4m3fnuz(INFINITY), 0x7F);
    assert_int_equal(dt_f32_to_e4m3fnuz(-INFINITY), 0xFF);
    assert_int_equal(dt_f32_to_e4m3fnuz(-300.0f), 0xFF);
    assert_int_equal(dt_f32_to_e4m3fnuz(NAN), 0x80);
}

static void test_e2m1_encoder(void **state)
{
    (void)state;
    for (int c = 0; c < 16; c++)
        assert_int_equal(dt_f32_to_e2m1(E2M1[c]), c == 8 ? 0 : c);
    const struct {
        float x;
        uint8_t code;
    } ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4}, {2.5f, 4}, {3.5f, 6}, {5.0f, 6},
                {0.26f, 1}, {0.74f, 1}, {0.76f, 2}, {1.26f, 3}, {1.74f, 3}, {2.6f, 5}, {3.4f, 5},
                {5.1f, 7}, {4.9f, 6}, {6.0f, 7}, {7.0f, 7}, {100.0f, 7}, {INFINITY, 7}, {0.1f, 0}};
    for (size_t i = 0; i < sizeof ties / sizeof *ties; i++) {
        if (dt_f32_to_e2m1(ties[i].x) != ties[i].code)
            fail_msg("e2m1(%g) = %d, want %d", (double)ties[i].x, dt_f32_to_e2m1(ties[i].x), ties[i].code);
        uint8_t neg = ties[i].code ? (uint8_t)(ties[i].code | 8) : 0;
        assert_int_equal(dt_f32_to_e2m1(-ties[i].x), neg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_ocp_all_codes),
        cmocka_unit_test(test_e4m3_fnuz_all_codes),
        cmocka_unit_test(test_e5m2_ocp_all_codes),
        cmocka_unit_test(test_e5m2_fnuz_all_codes),
        cmocka_unit_test(test_e2m1_all_codes),
        cmocka_unit_test(test_e8m0_codes),
        cmocka_unit_test(test_fp8_dispatch_and_bulk),
        cmocka_unit_test(test_plain_bulk),
        cmocka_unit_test(test_names_and_sizes),
        cmocka_unit_test(test_f16_notable),
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_bf16_decode),
        cmocka_unit_test(test_bf16_round_to_nearest_even),
        cmocka_unit_test(test_e4m3_encoder),
        cmocka_unit_test(test_e4m3fnuz_encoder),
        cmocka_unit_test(test_e2m1_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
