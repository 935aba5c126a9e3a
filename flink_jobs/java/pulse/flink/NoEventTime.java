package pulse.flink;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;

/**
 * Watermarks of a stream that carries no event time (the item snapshots the user stage receives on
 * its broadcast input): at the end of time from the first periodic emit on, so an operator that
 * joins this stream with another keeps the other's event time.
 *
 * <p>{@code WatermarkStrategy.noWatermarks()} would leave this input's watermark at the start of
 * time while the job runs: the two-input operator takes the smaller of its inputs' watermarks, so
 * its event time would never move and its event-time timers (session close, impression expiry)
 * would fire only when a bounded job ends.
 */
public final class NoEventTime implements WatermarkStrategy<Object> {
    private static final long serialVersionUID = 1L;

    @Override
    public WatermarkGenerator<Object> createWatermarkGenerator(WatermarkGeneratorSupplier.Context context) {
        return new WatermarkGenerator<Object>() {
            @Override
            public void onEvent(Object event, long eventTimestamp, WatermarkOutput output) {
            }

            @Override
            public void onPeriodicEmit(WatermarkOutput output) {
                output.emitWatermark(new Watermark(Long.MAX_VALUE));
            }
        };
    }
}
