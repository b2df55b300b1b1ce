"""PGD under bf16 autocast vs fp32 on trained models: does low precision weaken the attack?"""
import sys, torch, aelf
from aelf.evaluate import accuracy
for run in sys.argv[1:]:
    model = aelf.load_model(run)
    x, y = aelf.load_dataset(run, "test")
    attack = aelf.PGD(eps=0.3, n_steps=16, step_size=0.02)
    x_fp32 = torch.cat([attack(model, x[i:i+250], y[i:i+250]) for i in range(0, len(x), 250)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_bf16 = torch.cat([attack(model, x[i:i+250], y[i:i+250]) for i in range(0, len(x), 250)])
    acc32, acc16 = accuracy(model, x_fp32, y), accuracy(model, x_bf16, y)
    print(f"{run}: robust accuracy under PGD(0.3,16,0.02) crafted in fp32 {acc32:.2f}%, in bf16 autocast {acc16:.2f}% "
          f"(scored in fp32; {len(y)} images); x_adv differ in {(x_fp32 != x_bf16).float().mean().item()*100:.1f}% of pixels")
