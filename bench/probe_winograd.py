"""Probe: Winograd F(2x2, 3x3) convolution written as plain TensorFlow ops vs TF's own Conv2D.

Winograd needs 2.25x fewer multiplies than a direct 3x3 convolution, so it was a candidate for
beating the float32 FLOP peak in the engine. Written as TF ops (strided slices and adds for the
transforms, one batched matmul), it is 1.5-7x slower than TF's direct convolution on CPU at VGG16's
shapes: the transforms are memory-bound, unfused ops. Kept as the evidence for bench/RESULTS.md;
not used by the engine. Run: ``.venv/bin/python bench/probe_winograd.py``.
"""
# ruff: noqa
import time
import numpy as np
import tensorflow as tf
def bench(f, *a, n=5):
    f(*a); ts=[]
    for _ in range(n):
        t=time.perf_counter(); r=f(*a); _=r.numpy(); ts.append(time.perf_counter()-t)
    return min(ts)
G=np.array([[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]],np.float32)
def kernel_u(w):
    return tf.constant(np.einsum('ar,bs,rsio->abio',G,G,w).reshape(16,w.shape[2],w.shape[3]))
def wino_full(x,U):
    N=tf.shape(x)[0]; H=x.shape[1]; W=x.shape[2]; C=x.shape[3]; K=U.shape[2]
    p=tf.pad(x,[[0,0],[1,1],[1,1],[0,0]])
    R=[p[:,k:k+H:2] for k in range(4)]
    t=[R[0]-R[2],R[1]+R[2],R[2]-R[1],R[1]-R[3]]
    v=[]
    for ta in t:
        c=[ta[:,:,k:k+W:2] for k in range(4)]
        v+= [c[0]-c[2],c[1]+c[2],c[2]-c[1],c[1]-c[3]]
    V=tf.reshape(tf.stack(v,0),[16,-1,C])
    M=tf.reshape(tf.matmul(V,U),[4,4,-1,K])
    s0=M[0]+M[1]+M[2]; s1=M[1]-M[2]-M[3]   # (4,NT,K)
    rows=[]
    for s in (s0,s1):
        y0=s[0]+s[1]+s[2]; y1=s[1]-s[2]-s[3]   # (NT,K)
        rows.append(tf.reshape(tf.stack([y0,y1],1),[N,H//2,W,K]))
    return tf.reshape(tf.stack(rows,2),[N,H,W,K])
for (N,H,C,K) in [(64,8,512,512),(64,8,256,512),(64,16,256,256),(64,32,128,128),(64,64,64,64),(8,56,256,256),(8,28,512,512),(8,112,128,128)]:
    x=tf.random.normal([N,H,H,C]); w=(np.random.randn(3,3,C,K)/np.sqrt(9*C)).astype(np.float32)
    U=kernel_u(w); wt=tf.constant(w)
    d=tf.function(lambda x: tf.nn.conv2d(x,wt,1,'SAME'))
    wf=tf.function(lambda x: wino_full(x,U))
    err=float(tf.reduce_max(tf.abs(d(x)-wf(x)))/tf.reduce_max(tf.abs(d(x))))
    td=bench(d,x); tw=bench(wf,x)
    print(N,H,C,K,'direct %.1f ms  wino %.1f ms  speedup %.2f  relerr %.1e'%(td*1e3,tw*1e3,td/tw,err),flush=True)
