"""GluonCV's "Deep dive into SSD training: 3 tips to boost performance", ported line by line to ssdkit.

Run: ``python examples/train_ssd_advanced.py``. Each block names the MXNet line it replaces. The losses and the
initializer "peeks" are random (as in the original); the counts, shapes and softmax values are not.
"""

import torch

import ssdkit
from ssdkit import SSDTargetGenerator

torch.manual_seed(0)

##############################################################################
# Tip 1. Loss normalization: batch-wise versus sample-wise
# --------------------------------------------------------
# x = mx.random.uniform(shape=(2, 3, 300, 300))  # use batch-size 2
x = torch.rand(2, 3, 300, 300)
# suppose image 1 has single object
id1 = torch.tensor([1.0])
bbox1 = torch.tensor([[10.0, 20, 80, 90]])  # xmin, ymin, xmax, ymax
# suppose image 2 has 4 objects
id2 = torch.tensor([1.0, 3, 5, 7])
bbox2 = torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 60], [50, 50, 90, 90], [100, 110, 120, 140]])

# combine them into a batch by padding -1 as sentinel values
gt_ids = torch.ones(2, 4) * -1
gt_ids[0, :1] = id1
gt_ids[1, :4] = id2
print("class_ids:", gt_ids)

gt_boxes = torch.ones(2, 4, 4) * -1
gt_boxes[0, :1, :] = bbox1
gt_boxes[1, :, :] = bbox2
print("bounding boxes:", gt_boxes)

# net = model_zoo.get_model('ssd_300_vgg16_atrous_voc', pretrained_base=False, pretrained=False)
net = ssdkit.get_model("ssd_300_vgg16_atrous_voc", pretrained_base=False, pretrained=False)


# net.initialize() -- PyTorch modules are initialized when built
# conf_loss = gluon.loss.SoftmaxCrossEntropyLoss(); loc_loss = gluon.loss.HuberLoss()
# (Gluon losses average over every axis but the batch axis, with the mask as sample weight)
def conf_loss(cls_preds, cls_targets, mask):
    ce = torch.nn.functional.cross_entropy(cls_preds.transpose(1, 2), cls_targets.clamp(min=0), reduction="none")
    return (ce * mask[..., 0]).mean(dim=1)


def loc_loss(box_preds, box_targets, mask):
    return (torch.nn.functional.huber_loss(box_preds, box_targets, reduction="none", delta=1.0) * mask).mean(dim=(1, 2))


# Simulate the training steps by manually computing the losses
# (ssdkit.SSDMultiBoxLoss does all of this in one call).
target_generator = SSDTargetGenerator()
# with autograd.record():  -- autograd records by default in PyTorch
# 1. forward pass
cls_preds, box_preds, anchors = net(x)
# 2. generate training targets
cls_targets, box_targets, box_masks = target_generator(anchors, cls_preds, gt_boxes, gt_ids)
num_positive = (cls_targets > 0).sum().item()
cls_mask = (cls_targets >= 0).unsqueeze(-1).float()  # negative targets should be ignored in loss
# 3.1 batch-wise normalization: divide the loss by the number of positives in the whole batch
batch_conf_loss = conf_loss(cls_preds, cls_targets, cls_mask) / num_positive
batch_loc_loss = loc_loss(box_preds, box_targets, box_masks) / num_positive
# 3.2 sample-wise normalization: divide by the positives of each image
sample_num_positive = (cls_targets > 0).sum(dim=1).float()
sample_conf_loss = conf_loss(cls_preds, cls_targets, cls_mask) / sample_num_positive
sample_loc_loss = loc_loss(box_preds, box_targets, box_masks) / sample_num_positive
# rescale back to loss per image (the losses above are means)
rescale_conf = cls_preds.numel() / cls_preds.shape[0]
rescale_loc = box_preds.numel() / box_preds.shape[0]
# then call backward and step: L = conf_loss + loc_loss * alpha; L.backward()

print("batch-wise num_positive:", float(num_positive))
print("sample-wise num_positive:", sample_num_positive.tolist())
print("batch-wise norm conf loss:", (batch_conf_loss * rescale_conf).tolist())
print("sample-wise norm conf loss:", (sample_conf_loss * rescale_conf).tolist())
print("batch-wise norm loc loss:", (batch_loc_loss * rescale_loc).tolist())
print("sample-wise norm loc loss:", (sample_loc_loss * rescale_loc).tolist())
# the same two choices with ssdkit's loss (hard negatives mined in the loss, as GluonCV trains):
for norm in ("batch", "sample"):
    total, cls_l, box_l = ssdkit.SSDMultiBoxLoss(normalization=norm)(cls_preds, box_preds, cls_targets, box_targets)
    print(f"SSDMultiBoxLoss(normalization={norm!r}) per image:", [round(v, 4) for v in total.tolist()])

##############################################################################
# Tip 2. Initializer matters: don't stick to one single initializer
# -----------------------------------------------------------------
net = ssdkit.get_model("ssd_300_vgg16_atrous_voc", pretrained=False, pretrained_base=False)
# net(mx.nd.zeros(shape=(1, 3, 300, 300)))  -- shapes are known at construction in PyTorch
predictors = [(k, v) for k, v in net.named_parameters() if "predictor" in k]
name, pred = predictors[0]
print(name, "Parameter", tuple(pred.shape))

# pred.initialize(mx.init.Uniform(), force_reinit=True)
ssdkit.init_weights(net.class_predictors[0], "uniform")
print("param shape:", tuple(pred.shape), "peek first 20 elem:", pred.detach().reshape(-1)[:20])

# pred.initialize(mx.init.Xavier(rnd_type='gaussian', magnitude=2, factor_type='out'), force_reinit=True)
ssdkit.init_weights(net.class_predictors[0], "xavier_gaussian_out")
print("param shape:", tuple(pred.shape), "peek first 20 elem:", pred.detach().reshape(-1)[:20])

##############################################################################
# Tip 3. Interpreting confidence scores: process each class separately
# --------------------------------------------------------------------
print("class prediction shape:", tuple(cls_preds.shape))

cls_pred = torch.tensor([-1, -2, 3, 4, 6.5, 6.4])
cls_prob = torch.softmax(cls_pred, dim=-1)
for k, v in zip(["bg", "apple", "orange", "person", "dog", "cat"], cls_prob.tolist()):
    print(k, v)

# ssdkit.MultiClassDecoder (argmax, method 1) versus ssdkit.MultiPerClassDecoder (method 2):
ids, scores = ssdkit.MultiClassDecoder()(cls_prob[None, None])
print("argmax decoder keeps:", ids.tolist(), scores.tolist())
ids, scores = ssdkit.MultiPerClassDecoder(num_class=6)(cls_prob[None, None])
print("per-class decoder keeps:", ids.tolist(), [[[round(s, 4) for s in r] for r in b] for b in scores.tolist()])
# net.detect() uses per-class decoding by default; net.set_decoder("argmax") switches.
