package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/net/ipv6"
)

var (
	allDHCPRelayAgentsAndServers = net.ParseIP("ff02::1:2")
	allDHCPServers               = net.ParseIP("ff05::1:3")
)

// maxDatagram is the receive buffer: the largest UDP payload.
const maxDatagram = 64 << 10

type packet struct {
	b    []byte
	info PacketInfo
	src  net.Addr
}

// Serve listens on [::]:Port, joins ff02::1:2 (and ff05::1:3 if configured)
// on every configured interface, and answers until ctx is done. It runs the
// reader, Config.Workers workers and the reclaimer, and returns when all have
// stopped.
func (s *Server) Serve(ctx context.Context) error {
	lc := net.ListenConfig{}
	pc, err := lc.ListenPacket(ctx, "udp6", fmt.Sprintf("[::]:%d", s.cfg.Port))
	if err != nil {
		return fmt.Errorf("listen on UDP port %d: %w", s.cfg.Port, err)
	}
	conn := ipv6.NewPacketConn(pc)
	if err := conn.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		pc.Close()
		return fmt.Errorf("enable IPv6 control messages: %w", err)
	}
	ifaces := map[int]string{}
	for _, name := range s.cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			pc.Close()
			return fmt.Errorf("interface %q: %w", name, err)
		}
		if err := conn.JoinGroup(ifi, &net.UDPAddr{IP: allDHCPRelayAgentsAndServers}); err != nil {
			pc.Close()
			return fmt.Errorf("join ff02::1:2 on %s: %w", name, err)
		}
		if s.cfg.SiteMulticast {
			if err := conn.JoinGroup(ifi, &net.UDPAddr{IP: allDHCPServers}); err != nil {
				pc.Close()
				return fmt.Errorf("join ff05::1:3 on %s: %w", name, err)
			}
		}
		ifaces[ifi.Index] = name
	}
	s.log.Info("serving DHCPv6", zap.Int("port", s.cfg.Port), zap.Strings("interfaces", s.cfg.Interfaces),
		zap.String("server-duid", fmt.Sprintf("%x", s.duid)), zap.Int("workers", s.cfg.Workers))

	queue := make(chan packet, s.cfg.QueueSize)
	var wg sync.WaitGroup
	for i := 0; i < s.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				if ctx.Err() != nil {
					continue // shutting down: the socket is closed, commit nothing more
				}
				s.serveOne(conn, p)
			}
		}()
	}
	rctx, stopReclaim := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.reclaimLoop(rctx)
	}()
	go func() {
		<-ctx.Done()
		pc.Close()
	}()

	buf := make([]byte, maxDatagram)
	var rerr error
	for {
		n, cm, src, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				rerr = fmt.Errorf("read: %w", err)
			}
			break
		}
		s.metrics.inc(mPktReceived)
		if cm == nil {
			s.metrics.inc(mReceiveDrop)
			continue
		}
		name, ok := ifaces[cm.IfIndex]
		if !ok {
			s.metrics.inc(mReceiveDrop) // not one of our interfaces
			continue
		}
		info := PacketInfo{IfIndex: cm.IfIndex, IfName: name}
		if ua, ok := src.(*net.UDPAddr); ok {
			a, _ := netip.AddrFromSlice(ua.IP)
			info.Src = netip.AddrPortFrom(a.WithZone(ua.Zone), uint16(ua.Port))
		}
		if d, ok := netip.AddrFromSlice(cm.Dst); ok {
			info.Dst = d
		}
		if !s.admit(buf[:n], info.Src.Addr()) {
			continue // over a rate limit: counted (and logged) by admit
		}
		p := packet{b: append([]byte(nil), buf[:n]...), info: info, src: src}
		select {
		case queue <- p:
		default:
			s.metrics.inc(mQueueFull)
		}
	}
	close(queue)
	stopReclaim()
	wg.Wait()
	s.log.Info("DHCPv6 service stopped")
	return rerr
}

// serveOne handles one packet; a panic is logged and counted, never fatal.
func (s *Server) serveOne(conn *ipv6.PacketConn, p packet) {
	defer func() {
		if r := recover(); r != nil {
			s.metrics.inc(mHandlerPanics)
			s.log.Error("panic handling packet", zap.Any("panic", r), zap.String("src", p.info.Src.String()),
				zap.ByteString("stack", debug.Stack()))
		}
	}()
	out, _, err := s.handle(p.b, p.info)
	if err != nil {
		if errors.Is(err, errDrop) {
			s.log.Debug("packet dropped", zap.String("src", p.info.Src.String()), zap.String("interface", p.info.IfName), zap.Error(err))
		} else {
			s.log.Debug("bad packet", zap.String("src", p.info.Src.String()), zap.Error(err))
		}
		return
	}
	// A link-local destination carries its zone, which picks the interface;
	// only other destinations need the control message (it costs a little
	// on every send).
	var cm *ipv6.ControlMessage
	if !p.info.Src.Addr().IsLinkLocalUnicast() {
		cm = &ipv6.ControlMessage{IfIndex: p.info.IfIndex}
	}
	if _, err := conn.WriteTo(out, cm, p.src); err != nil {
		s.metrics.inc(mSendFailed)
		s.log.Warn("send reply", zap.String("dst", p.info.Src.String()), zap.Error(err))
	}
}
