/**
 * `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version,mig.mode.current
 * --format=csv,noheader,nounits` in the form real cards print it: the names and total MiB these
 * cards report (the A40's 46068 MiB for its "48 GB", the H100's 81559), consumer cards with no MIG
 * mode ([N/A]); the UUIDs are made up in the driver's format.
 */
export const RECORDED = {
  dgxA100: Array.from({ length: 8 }, (_, i) => `${i}, GPU-4f1c2a7e-9b3d-4c8e-a1f0-0c5e6d7b8a9${i}, NVIDIA A100-SXM4-80GB, 81920, 535.129.03, Disabled`).join('\n'),
  h100: '0, GPU-8d2f1e3c-5a6b-4c7d-9e8f-0a1b2c3d4e5f, NVIDIA H100 80GB HBM3, 81559, 550.54.15, Disabled\n1, GPU-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d, NVIDIA H100 80GB HBM3, 81559, 550.54.15, Disabled',
  rtx4090: '0, GPU-0f9e8d7c-6b5a-4938-2716-05f4e3d2c1b0, NVIDIA GeForce RTX 4090, 24564, 550.127.05, [N/A]',
  mixed: [
    '0, GPU-a0a0a0a0-0000-4000-8000-000000000000, NVIDIA A100 80GB PCIe, 81920, 550.127.05, Disabled',
    '1, GPU-a1a1a1a1-1111-4111-8111-111111111111, NVIDIA A100 80GB PCIe, 81920, 550.127.05, Disabled',
    '2, GPU-b2b2b2b2-2222-4222-8222-222222222222, NVIDIA GeForce RTX 4090, 24564, 550.127.05, [N/A]',
    '3, GPU-b3b3b3b3-3333-4333-8333-333333333333, NVIDIA GeForce RTX 4090, 24564, 550.127.05, [N/A]',
  ].join('\n'),
  mig: '0, GPU-5c6d7e8f-9a0b-4c1d-2e3f-4a5b6c7d8e9f, NVIDIA A100-SXM4-40GB, 40960, 535.129.03, Enabled',
  a40: '0, GPU-3e4f5a6b-7c8d-4e9f-0a1b-2c3d4e5f6a7b, NVIDIA A40, 46068, 550.127.05, [N/A]',
};
